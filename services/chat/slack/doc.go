// Package slack is switchboard's Slack adapter: it lets a team run every
// command from its Slack channels and shows every answer, progress update
// and notice there.
//
// Ingress. Messages arrive over Socket Mode (an app-level token, no public
// URL) or the Events API over HTTP (requests verified with the signing
// secret within a five-minute window, the url_verification challenge
// answered). Every request is acknowledged first and handled after, so
// Slack's three-second limit holds whatever a command takes. A message is
// a command when it mentions the bot at its start, is a direct message,
// starts with a configured prefix ("sb:"), or comes through the slash
// command ("/sb"). Its command id derives from team, channel and message
// ts, so Slack's redeliveries (X-Slack-Retry-Num, Socket Mode retries) and
// a second replica never run it twice: this replica remembers the events it
// handled, and kit/command's KV Create refuses a second job anywhere.
//
// Identity. A Slack user id becomes "slack:U…" with display name, e-mail
// and user-group handles (users.info, usergroups.list), cached with
// expiry; chat.rbac grants roles by any of them.
//
// Egress. Posts are answered in the command's thread, with 👀 on the
// command while it runs and ✅ or ❌ when it ends; Block Kit for fields,
// code and links; long output as a file (files.getUploadURLExternal and
// files.completeUploadExternal); progress edits one message (chat.update);
// images by URL. A post that threads under another post's id (the router
// puts an incident's later events under its first, a digest's list under
// its headline) goes into the thread of the Slack message that post
// became: the adapter keeps post id → message ts in KV sb_slack_posts, so
// every replica, and a restarted one, finds it; one not known goes to the
// channel, and the log says so. Posts to a channel are paced to Slack's
// one message per second, retried on 429 after Retry-After and on 5xx with
// backoff, and when a channel's queue grows its notices are coalesced into
// a digest with the full list in its thread. Posts to a channel that takes none
// (archived, bot not invited) are skipped as permanent failures and
// reported once to the ops channel.
//
// The adapter implements the chat service's Adapter and BatchAdapter; it
// imports nothing from the chat service (Ingress is declared here), so
// another chat system is one more package like this one.
package slack
