// Package incidents brings PagerDuty, a public status page and other
// systems' notifications into switchboard.
//
//   - POST /webhooks/pagerduty verifies PagerDuty's webhook v3 signatures
//     (several secrets while rotating), publishes each delivery once as an
//     Event on sb.event.pagerduty.<event type> (delivery ids are remembered
//     in KV sb_incidents_seen for longer than PagerDuty's 48 hours of
//     retries), and answers well within PagerDuty's 5 seconds.
//   - POST /hooks/<source> takes any system's JSON, authenticated by a
//     bearer token or a signature per source, and maps it to an Event with
//     a per-source template (GitHub Actions and CircleCI are built in).
//   - Commands: pager ack|resolve|oncall|trigger, incident note|show,
//     status set|incident, acting in PagerDuty as the person who asked.
//
// Nothing here posts to chat: events go to EVENTS, and the chat's event
// router (services/chat/route) decides where people see them.
//
// Backends are leaf packages behind interfaces declared here: pd (PagerDuty
// REST and Events API v2, on go-pagerduty) for Pager, statuspage (Atlassian
// Statuspage) for StatusPage. pdtest and statuspage/statuspagetest are their
// in-process fakes for tests.
package incidents
