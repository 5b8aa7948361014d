package slack

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/slack-go/slack"

	chatv1 "github.com/switchboard-ops/switchboard/proto/sb/chat/v1"
)

// Slack's limits on what one message may hold.
const (
	maxSectionText = 3000
	maxFieldText   = 2000
	maxFields      = 10
	maxBlocks      = 50
)

// rendered is a post as Slack will show it.
type rendered struct {
	// text is the notification and fallback text (mrkdwn, escaped).
	text   string
	blocks []slack.Block
	// file, when set, is long output that goes up as a file/snippet and
	// replaces the blocks; text becomes its comment.
	file *upload
	// uploads are attachments that carry their bytes.
	uploads []upload
}

type upload struct {
	name, title, content, snippetType string
}

// esc escapes text for Slack's mrkdwn: &, < and > are control characters
// (a service's text must never become <!channel> or a fake link).
func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// render turns a post into Block Kit: markdown and text as sections,
// code as preformatted sections, fields as two-column sections, links,
// and images by URL. Output longer than max bytes (a plan, a diff, a log)
// becomes a file with the first line of the text as its comment.
func render(p *chatv1.ChatPost, max int) rendered {
	var r rendered
	text := p.GetText()
	long := len(text) > max
	for _, b := range p.GetBlocks() {
		if c := b.GetCode(); len(c) > max-8 {
			long = true
		}
	}
	if long {
		var full strings.Builder
		full.WriteString(text)
		for _, b := range p.GetBlocks() {
			switch {
			case b.GetCode() != "":
				full.WriteString("\n\n" + b.GetCode())
			case b.GetMarkdown() != "":
				full.WriteString("\n\n" + b.GetMarkdown())
			case b.GetFields() != nil:
				for _, f := range b.GetFields().GetItems() {
					fmt.Fprintf(&full, "\n%s: %s", f.GetTitle(), f.GetValue())
				}
			case b.GetLink() != nil:
				fmt.Fprintf(&full, "\n%s: %s", b.GetLink().GetLabel(), b.GetLink().GetUrl())
			}
		}
		first, _, _ := strings.Cut(strings.TrimSpace(text), "\n")
		r.text = esc(cut(first, 300)) + " _(full output attached)_"
		r.file = &upload{name: fileName(p), title: cut(first, 200), content: full.String(), snippetType: "text"}
	} else {
		r.text = esc(text)
		// The text heads the blocks, unless the first block already says
		// it: text is also the fallback for adapters that show blocks
		// instead (the console), so the router repeats it as markdown.
		if bs := p.GetBlocks(); text != "" && len(bs) > 0 && bs[0].GetMarkdown() != text {
			r.blocks = append(r.blocks, section(esc(text)))
		}
		for _, b := range p.GetBlocks() {
			r.blocks = append(r.blocks, blockOf(b)...)
		}
	}
	for _, at := range p.GetAttachments() {
		switch {
		case at.GetUrl() != "" && strings.HasPrefix(at.GetContentType(), "image/"):
			alt := firstNonEmpty(at.GetTitle(), at.GetName(), "image")
			r.blocks = append(r.blocks, slack.NewImageBlock(at.GetUrl(), cut(alt, 2000), "", slack.NewTextBlockObject(slack.PlainTextType, cut(alt, 2000), false, false)))
		case at.GetUrl() != "":
			r.blocks = append(r.blocks, section(fmt.Sprintf("<%s|%s>", linkSafe(at.GetUrl()), esc(firstNonEmpty(at.GetTitle(), at.GetName(), at.GetUrl())))))
		case len(at.GetData()) > 0:
			r.uploads = append(r.uploads, upload{name: firstNonEmpty(at.GetName(), "attachment"), title: firstNonEmpty(at.GetTitle(), at.GetName()), content: string(at.GetData())})
		}
	}
	if len(r.blocks) > 0 && r.text == "" {
		r.text = "switchboard"
	}
	if len(r.blocks) > maxBlocks {
		r.blocks = append(r.blocks[:maxBlocks-1], section("_… more in the console (`job "+esc(p.GetJobId())+"`)_"))
	}
	return r
}

func blockOf(b *chatv1.Block) []slack.Block {
	switch {
	case b.GetMarkdown() != "":
		return []slack.Block{section(cut(esc(b.GetMarkdown()), maxSectionText))}
	case b.GetCode() != "":
		return []slack.Block{section("```" + esc(b.GetCode()) + "```")}
	case b.GetFields() != nil:
		var out []slack.Block
		items := b.GetFields().GetItems()
		for len(items) > 0 {
			n := min(len(items), maxFields)
			var fs []*slack.TextBlockObject
			for _, f := range items[:n] {
				fs = append(fs, slack.NewTextBlockObject(slack.MarkdownType, cut("*"+esc(f.GetTitle())+"*\n"+esc(f.GetValue()), maxFieldText), false, false))
			}
			out = append(out, slack.NewSectionBlock(nil, fs, nil))
			items = items[n:]
		}
		return out
	case b.GetLink() != nil:
		l := b.GetLink()
		return []slack.Block{section(fmt.Sprintf("<%s|%s>", linkSafe(l.GetUrl()), esc(firstNonEmpty(l.GetLabel(), l.GetUrl()))))}
	}
	return nil
}

func section(mrkdwn string) slack.Block {
	return slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, cut(mrkdwn, maxSectionText), false, false), nil, nil)
}

// linkSafe keeps a URL from breaking out of <url|label>.
func linkSafe(u string) string {
	return strings.NewReplacer("|", "%7C", ">", "%3E", "<", "%3C").Replace(u)
}

// cut shortens s to at most n bytes at a character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n = max(n-len("…"), 0)
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func fileName(p *chatv1.ChatPost) string {
	if id := p.GetJobId(); id != "" {
		return "job-" + unsafeName.ReplaceAllString(id, "_") + ".txt"
	}
	return "output.txt"
}

// oneLine is the first line of s, cut to n bytes.
func oneLine(s string, n int) string {
	first, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return cut(first, n)
}
