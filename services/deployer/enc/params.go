package enc

import (
	"strings"

	"gopkg.in/yaml.v3"
)

// Params are Puppet parameters by name, each the value its YAML says: a
// string, int, float64, bool, nil, []any or map[string]any. Puppet gets
// them with those types, so a class parameter typed Integer or Array
// accepts them; a string that looks like a number stays a string only when
// it is quoted in the file.
type Params map[string]any

// Texts renders each parameter as text, for the published inventory (its
// parameters are strings): scalars as written plainly, lists and mappings
// as YAML flow ("[a, b]", "{k: v}"), null as "".
func (p Params) Texts() map[string]string {
	if p == nil {
		return nil
	}
	out := make(map[string]string, len(p))
	for k, v := range p {
		out[k] = paramText(v)
	}
	return out
}

func paramText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	}
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return ""
	}
	flow(&n)
	b, err := yaml.Marshal(&n)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func flow(n *yaml.Node) {
	if n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode {
		n.Style = yaml.FlowStyle
	}
	for _, c := range n.Content {
		flow(c)
	}
}

// params reads a parameters mapping.
func params(v *yaml.Node, bad func(int, string, ...any)) Params {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		bad(v.Line, "expected a mapping of parameter name to value")
		return nil
	}
	m, _ := value(v).(map[string]any)
	return Params(m)
}

// value is what a YAML node means, as Puppet should receive it. It is
// yaml.v3's reading of the node except for timestamps, which stay the
// text they were written as: Puppet loads an ENC's answer with Ruby's
// safe YAML loader, which refuses Date and Time values.
func value(n *yaml.Node) any {
	switch n.Kind {
	case yaml.AliasNode:
		return value(n.Alias)
	case yaml.DocumentNode:
		if len(n.Content) == 1 {
			return value(n.Content[0])
		}
		return nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			out = append(out, value(c))
		}
		return out
	case yaml.MappingNode:
		out := map[string]any{}
		var merged []map[string]any
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Tag == "!!merge" {
				// "<<: *defaults" (or a list of them): keys written here win.
				switch m := value(v).(type) {
				case map[string]any:
					merged = append(merged, m)
				case []any:
					for _, e := range m {
						if em, ok := e.(map[string]any); ok {
							merged = append(merged, em)
						}
					}
				}
				continue
			}
			out[keyText(k)] = value(v)
		}
		for _, m := range merged {
			for k, v := range m {
				if _, ok := out[k]; !ok {
					out[k] = v
				}
			}
		}
		return out
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float", "!!bool", "!!null":
			var v any
			if err := n.Decode(&v); err == nil {
				return v
			}
		}
		return n.Value
	}
	return nil
}

// keyText is a mapping key as Puppet hash keys and parameter names are: text.
func keyText(k *yaml.Node) string {
	if k.Kind == yaml.AliasNode && k.Alias != nil {
		return keyText(k.Alias)
	}
	return k.Value
}

// classList reads classes written as a list of names, or as a mapping of
// name → parameters (empty for a class without any), Puppet's two forms.
func classList(v *yaml.Node, bad func(int, string, ...any)) ([]string, map[string]Params) {
	if v.Kind != yaml.MappingNode {
		return strList(v, bad), nil
	}
	var names []string
	var ps map[string]Params
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, pv := v.Content[i], v.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			bad(k.Line, "expected a class name")
			continue
		}
		names = append(names, k.Value)
		if pv.Kind == yaml.ScalarNode && pv.Tag == "!!null" {
			continue
		}
		if pv.Kind != yaml.MappingNode {
			bad(pv.Line, "parameters of class %s must be a mapping of parameter name to value (or empty)", k.Value)
			continue
		}
		if p := params(pv, bad); len(p) > 0 {
			if ps == nil {
				ps = map[string]Params{}
			}
			ps[k.Value] = p
		}
	}
	return names, ps
}
