package chat

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/switchboard-ops/switchboard/services/chat/parse"
)

// An alias is a team's shorthand for a command with an argument template:
// "addtolb: lb add {host} {backend}" makes "addtolb web1 www" run
// "lb add web1 www". Placeholders take the alias's words in order of first
// appearance; {*} takes every word left. Words beyond the placeholders are
// appended, so flags still work ("justdeploy x --dry-run").
type alias struct {
	name     string
	template []string
	params   []string
}

var placeholder = regexp.MustCompile(`\{([A-Za-z0-9_*-]+)\}`)

func parseAliases(m map[string]string) (map[string]alias, error) {
	out := map[string]alias{}
	for name, tmpl := range m {
		if strings.ContainsAny(name, " \t") || name == "" {
			return nil, fmt.Errorf("chat.aliases: %q: an alias is one word", name)
		}
		line, err := parse.Split(tmpl)
		if err != nil {
			return nil, fmt.Errorf("chat.aliases.%s: %w", name, err)
		}
		if line.HasText || len(line.Words) == 0 {
			return nil, fmt.Errorf("chat.aliases.%s: the template must be a command without \"--\"", name)
		}
		a := alias{name: name, template: line.Words}
		seen := map[string]bool{}
		for _, w := range line.Words {
			for _, m := range placeholder.FindAllStringSubmatch(w, -1) {
				if !seen[m[1]] {
					seen[m[1]] = true
					a.params = append(a.params, m[1])
				}
			}
		}
		out[name] = a
	}
	return out, nil
}

// expand returns the words of the command the alias stands for.
// takesValue says whether a flag of that command takes a value in the next
// word (`--weight 5`), so the value is not taken for a placeholder; it may
// be nil when the command is not known (yet).
func (a alias) expand(words []string, takesValue func(flag string) bool) ([]string, error) {
	var pos []string
	var extra []string
	for i := 0; i < len(words); i++ {
		w := words[i]
		if strings.HasPrefix(w, "-") || len(pos) >= len(a.params) {
			extra = append(extra, w)
			name := strings.TrimLeft(w, "-")
			if strings.HasPrefix(w, "-") && !strings.Contains(name, "=") && takesValue != nil && takesValue(name) && i+1 < len(words) {
				i++
				extra = append(extra, words[i])
			}
			continue
		}
		pos = append(pos, w)
	}
	vals := map[string]string{}
	for i, p := range a.params {
		if p == "*" {
			vals[p] = strings.Join(append(pos[i:], extra...), " ")
			extra = nil
			break
		}
		if i >= len(pos) {
			return nil, fmt.Errorf("%s needs %s (it stands for %q)", a.name, a.usage(), strings.Join(a.template, " "))
		}
		vals[p] = pos[i]
	}
	var out []string
	for _, w := range a.template {
		if w == "{*}" {
			if v := vals["*"]; v != "" {
				out = append(out, strings.Fields(v)...)
			}
			continue
		}
		out = append(out, placeholder.ReplaceAllStringFunc(w, func(m string) string {
			return vals[m[1:len(m)-1]]
		}))
	}
	return append(out, extra...), nil
}

func (a alias) usage() string {
	var b []string
	for _, p := range a.params {
		if p == "*" {
			b = append(b, "[…]")
		} else {
			b = append(b, "<"+p+">")
		}
	}
	return strings.Join(b, " ")
}
