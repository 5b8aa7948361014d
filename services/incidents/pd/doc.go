// Package pd is switchboard's PagerDuty REST API v2 client: the few
// endpoints the incidents service uses (incidents list/get/manage/create,
// notes, on-calls, users, the Events API v2), on top of
// github.com/PagerDuty/go-pagerduty, with its own small types.
//
// What it adds to go-pagerduty is the retry policy a chat command needs:
// every call retries rate limits (429, honouring Retry-After and
// ratelimit-reset) and transient failures (5xx, network) until the
// context's deadline, and never repeats a request that may have been
// applied unless repeating it is harmless — a note or an incident whose
// first attempt ended ambiguously is looked up before it is sent again.
// go-pagerduty's errors do not carry response headers and flatten network
// errors into strings, so a RoundTripper records both per request.
//
// The package is a leaf: it imports nothing from switchboard.
package pd
