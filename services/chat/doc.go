// Package chat is switchboard's chat core: the ingress that turns a person's
// message into a command (parse, alias, authorise, confirm, dispatch, audit),
// the built-in commands, the registry of every service's commands discovered
// over NATS, and the egress that delivers posts to adapters in order.
//
// Adapters — the web console, the bridges on sb.chat.in.<bridge> (the CLI, the watcher, the deployer), Slack —
// hand messages to Service.Handle and receive posts from the CHAT stream, so
// every adapter gets the same grammar, RBAC and audit trail.
package chat
