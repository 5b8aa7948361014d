// Package console is the web console adapter: a small chat page, served by
// the chat service itself, that a team can use when Slack is down.
//
// People type in the browser; the console hands each message to the chat
// core (Ingress), which parses, authorises, audits and dispatches it exactly
// as it would a Slack message. The console never shows anything on its own
// authority: every line on the page — the echo of a person's message,
// progress, results, errors, notices — is a ChatPost read from the CHAT
// stream and pushed to the browser with Server-Sent Events. So every browser
// on every replica sees the same conversation, and a browser that reconnects
// (EventSource sends Last-Event-ID, the stream sequence) loses nothing and
// sees nothing twice.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary: the
// console must work on a machine with no internet and no build tool chain,
// which is exactly when it is needed.
package console
