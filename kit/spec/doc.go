// Package spec checks command arguments against their typed spec.
//
// The same checks run twice: in the chat ingress before a command is
// dispatched, and in every service again when the request arrives (automation
// and other adapters may send requests that never went through the chat
// parser). Both sides call [CheckValue] for single values and [Validate] for a
// whole [commandv1.CommandRequest], so a value the chat accepted is never
// refused by the service, and the other way round.
//
// Every error is a sentence a person can act on ("\"web_1!\" is not a host
// name ('_' is not allowed)"), never a Go error chain, because it is shown in
// the chat thread as it is.
package spec
