package slack

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
)

func TestUnescapeUndoesSlackMarkup(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"lb drain <http://web3.example.com|web3.example.com>,web4 www", "lb drain web3.example.com,web4 www"},
		{"deploy <#C024BE91L|ops> &lt;x&gt; &amp;", "deploy #ops <x> &"},
		{"whoami <@U024BE7LH>", "whoami @U024BE7LH"},
		{"page <!subteam^S1|@oncall>", "page oncall"},
		{"mail <mailto:ana@example.com|ana@example.com>", "mail ana@example.com"},
		{"open <https://ci.example.com/48213>", "open https://ci.example.com/48213"},
		{"lb drain web3 -- “kernel” update", "lb drain web3 -- “kernel” update"},
	} {
		if got := unescape(c.in); got != c.want {
			t.Errorf("unescape(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestSlackTSAcceptsMessageIDsAndRejectsTheRest(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"1700000000.000100":          "1700000000.000100",
		"T0SWITCH-1700000000.000100": "1700000000.000100",
		"T0SWITCH-slash-1337.42.abc": "",
		"m3f9a1c2e7b4d":              "",
		"":                           "",
	} {
		if got := slackTS(in); got != want {
			t.Errorf("slackTS(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRenderEscapesAndMovesLongOutputToAFile(t *testing.T) {
	t.Parallel()
	r := render(&chatv1.ChatPost{Text: "hi <!channel> & co"}, 3000)
	if r.text != "hi &lt;!channel&gt; &amp; co" || len(r.blocks) != 0 || r.file != nil {
		t.Errorf("short text: %+v", r)
	}
	long := strings.Repeat("+ a record\n", 400)
	r = render(&chatv1.ChatPost{Text: "plan: 400 changes\nmore", JobId: "7bfb4d06dcb7",
		Blocks: []*chatv1.Block{{Content: &chatv1.Block_Code{Code: long}}}}, 3000)
	if r.file == nil || r.file.name != "job-7bfb4d06dcb7.txt" || !strings.Contains(r.file.content, long) ||
		!strings.HasPrefix(r.text, "plan: 400 changes") || len(r.blocks) != 0 {
		t.Errorf("long output: text %q blocks %d file %v", r.text, len(r.blocks), r.file != nil)
	}
	var fields []*chatv1.Field
	for i := 0; i < 23; i++ {
		fields = append(fields, &chatv1.Field{Title: fmt.Sprint("f", i), Value: "v"})
	}
	r = render(&chatv1.ChatPost{Text: "t", Blocks: []*chatv1.Block{{Content: &chatv1.Block_Fields{Fields: &chatv1.Fields{Items: fields}}}}}, 3000)
	b, _ := json.Marshal(r.blocks)
	if n := strings.Count(string(b), `"fields"`); n != 3 {
		t.Errorf("23 fields in %d sections, want 3 (Slack allows 10 per section)", n)
	}
}

func TestRenderShowsTextRepeatedAsTheFirstMarkdownBlockOnce(t *testing.T) {
	t.Parallel()
	text := "Triggered: Incident #621"
	r := render(&chatv1.ChatPost{Text: text, Blocks: []*chatv1.Block{
		{Content: &chatv1.Block_Markdown{Markdown: text}},
		{Content: &chatv1.Block_Link{Link: &chatv1.Link{Label: "Details", Url: "https://acme.pagerduty.com/incidents/PINC621"}}},
	}}, 3000)
	b, _ := json.Marshal(r.blocks)
	if n := strings.Count(string(b), "Incident #621"); n != 1 || len(r.blocks) != 2 {
		t.Errorf("the text shows %d times in %d blocks, want once in 2: %s", n, len(r.blocks), b)
	}
	r = render(&chatv1.ChatPost{Text: "plan: 2 changes", Blocks: []*chatv1.Block{{Content: &chatv1.Block_Code{Code: "+ a\n+ b"}}}}, 3000)
	if len(r.blocks) != 2 {
		t.Errorf("text and a code block: %d blocks, want the text heading the code", len(r.blocks))
	}
}

func TestPlanCoalescesNoticesOnlyWhenTheQueueGrows(t *testing.T) {
	t.Parallel()
	a := &Adapter{cfg: Config{DigestAfter: 3}}
	n := func(id string) *chatv1.ChatPost {
		return &chatv1.ChatPost{Id: id, Kind: chatv1.Kind_KIND_NOTICE, Conversation: &chatv1.Conversation{Channel: "C1"}}
	}
	prog := func(id, job string) *chatv1.ChatPost {
		return &chatv1.ChatPost{Id: id, Kind: chatv1.Kind_KIND_PROGRESS, JobId: job}
	}
	res := &chatv1.ChatPost{Id: "r", Kind: chatv1.Kind_KIND_RESULT}
	shape := func(us []unit) string {
		var s []string
		for _, u := range us {
			switch {
			case u.digest:
				s = append(s, fmt.Sprintf("digest(%d)", len(u.posts)))
			case u.skip:
				s = append(s, "skip")
			default:
				s = append(s, u.posts[0].GetId())
			}
		}
		return strings.Join(s, " ")
	}
	for _, c := range []struct {
		name  string
		posts []*chatv1.ChatPost
		want  string
	}{
		{"a short queue is delivered as it is", []*chatv1.ChatPost{n("a"), n("b"), n("c")}, "a b c"},
		{"a long queue's notice runs become digests, in place", []*chatv1.ChatPost{n("a"), n("b"), res, n("c"), n("d"), n("e")}, "digest(2) r digest(3)"},
		{"a lone notice is not a digest", []*chatv1.ChatPost{n("a"), res, res, res, n("b")}, "a r r r b"},
		{"progress folds into the job's newer progress", []*chatv1.ChatPost{prog("p1", "j"), prog("p2", "k"), prog("p3", "j")}, "skip p2 p3"},
	} {
		if got := shape(a.plan(c.posts)); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	s := NewSecret("xoxb-very-secret")
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "s", s, "cfg", Config{BotToken: s})
	out := fmt.Sprintf("%v %+v %#v %s %q", s, s, s, s, s) + b.String()
	if strings.Contains(out, "very-secret") {
		t.Fatalf("secret printed: %s", out)
	}
	if s.Reveal() != "xoxb-very-secret" {
		t.Fatal("Reveal lost the value")
	}
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	t.Parallel()
	ok := DefaultConfig()
	ok.BotToken, ok.AppToken = NewSecret("xoxb-1"), NewSecret("xapp-1")
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"off is fine", func(c *Config) { c.BotToken, c.AppToken = Secret{}, Secret{} }, ""},
		{"socket mode", func(*Config) {}, ""},
		{"a user token", func(c *Config) { c.BotToken = NewSecret("xoxp-1") }, "chat.slack.bot_token"},
		{"socket mode without app token", func(c *Config) { c.AppToken = Secret{} }, "chat.slack.app_token"},
		{"events mode without secret", func(c *Config) { c.Mode = ModeEvents }, "chat.slack.signing_secret"},
		{"unknown mode", func(c *Config) { c.Mode = "rtm" }, "chat.slack.mode"},
		{"ops channel by name", func(c *Config) { c.OpsChannel = "#ops" }, "chat.slack.ops_channel"},
		{"slash command without slash", func(c *Config) { c.SlashCommand = "sb" }, "chat.slack.slash_command"},
	} {
		cfg := ok
		c.edit(&cfg)
		err := cfg.Validate()
		if (err == nil) != (c.want == "") || (err != nil && !strings.HasPrefix(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}
