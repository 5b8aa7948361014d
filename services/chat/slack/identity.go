package slack

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/slack-go/slack"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
)

// identities turns Slack user ids into switchboard identities — id
// "slack:U…", display name, e-mail and user-group handles — and caches them
// for the configured time, so a busy channel costs one users.info per
// person per TTL. RBAC grants roles by any of the three (chat.rbac.grants:
// users "slack:U024BE7LH" or "rob@example.com", groups "oncall"); the same
// identity goes into the audit trail and to PagerDuty.
type identities struct {
	api *slack.Client
	ttl time.Duration
	now func() time.Time
	log *slog.Logger

	people *cache[*chatv1.Identity]

	gmu      sync.Mutex
	groups   map[string][]string // user id → group handles
	groupsAt time.Time
}

func newIdentities(api *slack.Client, ttl time.Duration, now func() time.Time, log *slog.Logger) *identities {
	return &identities{api: api, ttl: ttl, now: now, log: log, people: newCache[*chatv1.Identity](ttl, 50_000, now)}
}

// identity returns the identity of a Slack user. When Slack cannot be
// asked, the identity has the id only (RBAC by id still works) and is not
// cached, so the next message asks again.
func (ids *identities) identity(ctx context.Context, user string) *chatv1.Identity {
	if id, ok := ids.people.get(user); ok {
		return id
	}
	who := &chatv1.Identity{Id: "slack:" + user, Name: user}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	u, err := ids.api.GetUserInfoContext(cctx, user)
	if err != nil {
		ids.log.Warn("slack: users.info; using the bare user id", "user", user, "error", err)
		return who
	}
	who.Name = firstNonEmpty(u.Profile.DisplayName, u.RealName, u.Name, user)
	who.Email = u.Profile.Email
	who.Automation = u.IsBot
	who.Groups = ids.groupsOf(cctx, user)
	ids.people.put(user, who)
	return who
}

// groupsOf returns the handles of the user groups a user is in, from one
// usergroups.list per TTL for the whole workspace.
func (ids *identities) groupsOf(ctx context.Context, user string) []string {
	ids.gmu.Lock()
	defer ids.gmu.Unlock()
	if ids.groups == nil || ids.now().Sub(ids.groupsAt) > ids.ttl {
		gs, err := ids.api.GetUserGroupsContext(ctx, slack.GetUserGroupsOptionIncludeUsers(true))
		if err != nil {
			// Without the usergroups:read scope or while Slack is down,
			// grants by group do not apply; grants by id and e-mail do.
			ids.log.Warn("slack: usergroups.list; group grants do not apply until it works", "error", err)
			return nil
		}
		m := map[string][]string{}
		for _, g := range gs {
			for _, u := range g.Users {
				m[u] = append(m[u], g.Handle)
			}
		}
		for _, hs := range m {
			sort.Strings(hs)
		}
		ids.groups, ids.groupsAt = m, ids.now()
	}
	return ids.groups[user]
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
