// Package wire holds what every switchboard component agrees on besides the
// message schemas: subject names, stream and bucket names, header names, and
// the protojson codec that every message on the bus goes through.
package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Streams and buckets declared by kit/bus.EnsureStreams.
const (
	// StreamChat holds every ChatPost, subject sb.chat.post.<adapter>.<channel>.
	StreamChat = "CHAT"
	// StreamEvents holds every Event, subject sb.event.<source>.<type>.
	StreamEvents = "EVENTS"
	// StreamAudit holds every audit Record, subject sb.audit.<stage>.
	StreamAudit = "AUDIT"
	// BucketJobs is the KV bucket of jobs: key job.<id>, and open.<service>.<id>
	// while a job has not ended.
	BucketJobs = "sb_jobs"
	// BucketReplicas holds one key per live replica, refreshed as a lease.
	BucketReplicas = "sb_replicas"
	// BucketInventory holds the inventory the deployer publishes: key
	// host.<name> per host (an inventory.v1.Host) and key meta (an
	// inventory.v1.Meta) written last. Every other service reads it.
	BucketInventory = "sb_inventory"
	// BucketLBDesired holds the load balancer service's desired state.
	BucketLBDesired = "sb_lb_desired"
	// BucketDNSPlans holds DNS plans by id.
	BucketDNSPlans = "sb_dns_plans"
	// BucketWatcher holds the watcher's per-check state.
	BucketWatcher = "sb_watcher"
)

// Events every service may rely on.
const (
	// SubjectInventoryChanged carries an Event whose field "diff" is an
	// inventory.v1.Diff in protojson.
	SubjectInventoryChanged = "sb.event.inventory.changed"
)

// Subjects.
const (
	// SubjectChatIn prefixes the chat ingress for programs outside the chat
	// service (request/reply: ChatMessage → ChatReply), one subject per
	// bridge: sb.chat.in.cli, sb.chat.in.watcher, sb.chat.in.deployer. NATS
	// permissions let each user publish only on its own bridge, so the chat
	// knows who sent a message from where it arrived, and checks that the
	// bridge may speak for the identity the message claims.
	SubjectChatIn = "sb.chat.in"
	// SubjectChatInAll matches every bridge.
	SubjectChatInAll = SubjectChatIn + ".>"
	// SubjectChatPostPrefix prefixes every ChatPost subject.
	SubjectChatPostPrefix = "sb.chat.post"
	// SubjectChatPosts matches every ChatPost.
	SubjectChatPosts = SubjectChatPostPrefix + ".>"
	// SubjectEvents matches every Event.
	SubjectEvents = "sb.event.>"
	// SubjectAudit matches every audit Record.
	SubjectAudit = "sb.audit.>"
	// SubjectCommandPrefix prefixes command subjects: sb.cmd.<service>.<verb>.
	SubjectCommandPrefix = "sb.cmd"
	// SubjectJobCancelPrefix prefixes cancel notices: sb.job.cancel.<job id>.
	// Every replica listens; the one running the job stops it.
	SubjectJobCancelPrefix = "sb.job.cancel"
)

// Headers.
const (
	HeaderContentType = "Content-Type"
	HeaderCommandID   = "Sb-Command-Id"
	// HeaderType carries the fully-qualified message name on shared streams,
	// so consumers can dispatch before decoding.
	HeaderType = "Sb-Type"
	// ContentTypeJSON is the Content-Type of every message.
	ContentTypeJSON = "application/json"
)

// ChatPostSubject is the subject of a post to channel of adapter.
func ChatPostSubject(adapter, channel string) string {
	return SubjectChatPostPrefix + "." + Token(adapter) + "." + Token(channel)
}

// CommandSubject is the subject of a command verb of a service.
func CommandSubject(service, verb string) string {
	return SubjectCommandPrefix + "." + Token(service) + "." + Token(verb)
}

// AuditSubject is the subject of an audit record of a stage ("request").
func AuditSubject(stage string) string { return "sb.audit." + Token(stage) }

// EventSubject is the subject of an event of source and dotted type.
func EventSubject(source, typ string) string {
	parts := []string{"sb.event", Token(source)}
	for _, p := range strings.Split(typ, ".") {
		parts = append(parts, Token(p))
	}
	return strings.Join(parts, ".")
}

// Token makes s safe as one subject token and as part of a KV key: it is
// kept when it is made only of [A-Za-z0-9_-] (the common case: "ops",
// "C024BE91L"), and otherwise replaced by "x" and 16 hex digits of its
// SHA-256. Subject tokens must not contain '.', '*', '>' or white space.
func Token(s string) string {
	if s != "" && len(s) <= 64 {
		ok := true
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				ok = false
				break
			}
		}
		if ok {
			return s
		}
	}
	sum := sha256.Sum256([]byte(s))
	return "x" + hex.EncodeToString(sum[:8])
}

// JobID is the short, key-safe id of the job of a command id: the first 12
// hex digits of its SHA-256. Command ids come from adapters and may hold any
// character; job ids are what people type.
func JobID(commandID string) string {
	sum := sha256.Sum256([]byte(commandID))
	return hex.EncodeToString(sum[:6])
}

// Marshal encodes m as canonical protojson.
func Marshal(m proto.Message) ([]byte, error) {
	return protojson.Marshal(m)
}

// unmarshal discards unknown fields: a replica that is one version behind
// must keep working when a newer one adds a field.
var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// Unmarshal decodes protojson into m, ignoring unknown fields.
func Unmarshal(b []byte, m proto.Message) error {
	return unmarshal.Unmarshal(b, m)
}

// TypeName is the fully-qualified message name sent in the Sb-Type header.
func TypeName(m proto.Message) string {
	return string(m.ProtoReflect().Descriptor().FullName())
}

// ChatInSubject is the chat ingress subject of a bridge ("cli").
func ChatInSubject(bridge string) string {
	return SubjectChatIn + "." + Token(bridge)
}
