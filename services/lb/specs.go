package lb

import (
	commandv1 "github.com/switchboard-ops/switchboard/proto/sb/command/v1"
)

// Argument and flag specs shared by the lb commands.
var (
	forceFlag = &commandv1.FlagSpec{Name: "force", Type: commandv1.ArgType_ARG_TYPE_BOOL,
		Help: "go past the safety limits (needs the role lb.force_role names)"}
	backendArg = func(required bool, help string) *commandv1.ArgSpec {
		return &commandv1.ArgSpec{Name: "backend", Type: commandv1.ArgType_ARG_TYPE_BACKEND, Required: required, Help: help}
	}
	hostArg = &commandv1.ArgSpec{Name: "host", Type: commandv1.ArgType_ARG_TYPE_HOST, Required: true,
		Help: "an inventory host; its HAProxy server has the same name"}
)

const safetyHelp = " Refused when it would leave a backend without a server in service, or with more than " +
	"lb.max_out_fraction of its servers out of service (drain, maint, weight 0 or failing checks), unless --force. " +
	"The host must be in the inventory and a server of the backend on every HAProxy instance of its environment. " +
	"The change goes to every instance; the answer says what happened on each, and an instance that missed it is " +
	"caught up by reconciliation."
