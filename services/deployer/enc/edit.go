package enc

import (
	"bytes"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Settable keys of a host file. parameters.<name> sets one parameter.
var hostKeys = []string{"environment", "role", "state", "fqdn", "ipv4", "ipv6", "backends", "classes"}

// listKeys take a comma-separated value and become YAML lists.
var listKeys = map[string]bool{"backends": true, "classes": true}

// Set is one key=value of `enc set`. The value "~" removes the key.
type Set struct {
	Key   string
	Value string
}

// ParseSet parses "key=value" and checks the key.
func ParseSet(kv string) (Set, error) {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return Set{}, fmt.Errorf("%q is not key=value", kv)
	}
	if p, ok := strings.CutPrefix(k, "parameters."); ok {
		if p == "" || strings.ContainsAny(p, ". ") {
			return Set{}, fmt.Errorf("%q: a parameter name has no dots or spaces", k)
		}
		return Set{Key: k, Value: v}, nil
	}
	for _, hk := range hostKeys {
		if k == hk {
			return Set{Key: k, Value: v}, nil
		}
	}
	return Set{}, fmt.Errorf("unknown key %q (keys: %s, parameters.<name>)", k, strings.Join(hostKeys, ", "))
}

// Document is a YAML file being edited: comments and key order are kept,
// new keys go at the end of their mapping.
type Document struct {
	doc yaml.Node
}

// ParseDocument parses a YAML mapping for editing; empty data is an empty mapping.
func ParseDocument(data []byte) (*Document, error) {
	d := &Document{}
	if err := yaml.Unmarshal(data, &d.doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %v", err)
	}
	if d.doc.Kind == 0 {
		d.doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	if len(d.doc.Content) != 1 || d.doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("must be a YAML mapping")
	}
	return d, nil
}

// Bytes encodes the document with two-space indentation.
func (d *Document) Bytes() []byte {
	var buf bytes.Buffer
	e := yaml.NewEncoder(&buf)
	e.SetIndent(2)
	e.Encode(&d.doc)
	e.Close()
	return buf.Bytes()
}

// lookup returns the value node of key in m, or nil.
func lookup(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// child returns the mapping under key in m, creating it when missing or null.
func child(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			v := m.Content[i+1]
			if v.Kind != yaml.MappingNode {
				*v = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", LineComment: v.LineComment, HeadComment: v.HeadComment}
			}
			return v
		}
	}
	v := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return v
}

// setValue replaces (keeping its comments) or appends key in m.
func setValue(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			old := m.Content[i+1]
			v.LineComment, v.HeadComment, v.FootComment = old.LineComment, old.HeadComment, old.FootComment
			if old.Kind == yaml.SequenceNode && v.Kind == yaml.SequenceNode {
				v.Style = old.Style
			}
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}

// remove deletes key from m.
func remove(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func str(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	// Keep strings that look like numbers or booleans ("1.10", "yes")
	// strings: quote them when YAML would read them as something else.
	var probe any
	if yaml.Unmarshal([]byte(s), &probe) != nil {
		n.Style = yaml.DoubleQuotedStyle
	} else if _, ok := probe.(string); !ok {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

func seq(items []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
	for _, it := range items {
		n.Content = append(n.Content, str(it))
	}
	return n
}

// Apply makes the sets on a host document.
func (d *Document) Apply(sets ...Set) {
	root := d.doc.Content[0]
	for _, s := range sets {
		m, key := root, s.Key
		if p, ok := strings.CutPrefix(s.Key, "parameters."); ok {
			m, key = child(root, "parameters"), p
		}
		switch {
		case s.Value == "~":
			remove(m, key)
		case listKeys[key] && m == root:
			var items []string
			for _, it := range strings.Split(s.Value, ",") {
				if it = strings.TrimSpace(it); it != "" {
					items = append(items, it)
				}
			}
			setValue(m, key, seq(items))
		default:
			setValue(m, key, str(s.Value))
		}
	}
	if p := lookup(root, "parameters"); p != nil && p.Kind == yaml.MappingNode && len(p.Content) == 0 {
		remove(root, "parameters")
	}
}

// SetPin sets pins.<service>.<role> to version.
func (d *Document) SetPin(service, role, version string) {
	setValue(child(child(d.doc.Content[0], "pins"), service), role, str(version))
}

// SetHost applies sets to a host file's contents and returns the new contents.
func SetHost(data []byte, sets ...Set) ([]byte, error) {
	d, err := ParseDocument(data)
	if err != nil {
		return nil, err
	}
	d.Apply(sets...)
	return d.Bytes(), nil
}
