package enc

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Settable keys of a host file. parameters.<name> sets one parameter.
var hostKeys = []string{"environment", "role", "state", "fqdn", "ipv4", "ipv6", "backends", "classes"}

// listKeys take a comma-separated value and become YAML lists.
var listKeys = map[string]bool{"backends": true, "classes": true}

// Set is one key=value of `enc set`. The value "~" removes the key.
//
// A parameter's value is written as a person would write it in the file,
// limited to the types a Puppet parameter is usually declared with: an
// integer (8080, -1) becomes an int, true and false a bool, anything else
// a string. A value in YAML quotes ("8080" or '8080') is a string whatever
// it looks like. Decimals (1.10) stay strings: reading them as floats would
// turn a version 1.10 into 1.1. The other keys are always strings.
type Set struct {
	Key   string
	Value string
}

// ParseSet parses "key=value" and checks the key, and that a quoted value
// is one quoted string.
func ParseSet(kv string) (Set, error) {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return Set{}, fmt.Errorf("%q is not key=value", kv)
	}
	if listKeys[k] && strings.ContainsAny(v, `"'`) {
		return Set{}, fmt.Errorf("%s is a comma-separated list of names, without quotes", k)
	}
	if _, err := unquote(v); err != nil {
		return Set{}, fmt.Errorf("%s: %w", k, err)
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

// Type is the YAML type the set writes: "integer", "boolean" or "string"
// ("" for a removal or a list).
func (s Set) Type() string {
	if s.Value == "~" || listKeys[s.Key] {
		return ""
	}
	if !strings.HasPrefix(s.Key, "parameters.") {
		return "string"
	}
	n, err := typedScalar(s.Value)
	if err != nil {
		return ""
	}
	switch n.Tag {
	case "!!int":
		return "integer"
	case "!!bool":
		return "boolean"
	}
	return "string"
}

// unquote returns the text of a value written in YAML quotes ("…" or
// '…'), and any other value as it is.
func unquote(v string) (text string, err error) {
	if v == "" || (v[0] != '"' && v[0] != '\'') {
		return v, nil
	}
	bad := fmt.Errorf("%s starts with a quote but is not one quoted string (write key='\"text\"' to set a string)", v)
	// yaml.v3 reads the first quoted string and ignores what follows it
	// ("a" "b" is "a"), so check first that the quote ends the value.
	q, inner := v[0], v[1:]
	if len(inner) == 0 || inner[len(inner)-1] != q {
		return "", bad
	}
	inner = inner[:len(inner)-1]
	if q == '\'' && strings.Contains(strings.ReplaceAll(inner, "''", ""), "'") {
		return "", bad
	}
	if q == '"' {
		for i := 0; i < len(inner); i++ {
			switch inner[i] {
			case '\\':
				i++
			case '"':
				return "", bad
			}
		}
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(v), &n); err != nil || n.Kind != yaml.DocumentNode || len(n.Content) != 1 || n.Content[0].Kind != yaml.ScalarNode {
		return "", bad
	}
	return n.Content[0].Value, nil
}

var integer = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// typedScalar is the node a parameter's value is written as (see Set).
func typedScalar(v string) (*yaml.Node, error) {
	if v != "" && (v[0] == '"' || v[0] == '\'') {
		text, err := unquote(v)
		if err != nil {
			return nil, err
		}
		return str(text), nil
	}
	// Leading zeros and other bases are left as text: YAML 1.1 readers
	// (Puppet's Ruby) take 0755 for octal, YAML 1.2 ones for decimal.
	if integer.MatchString(v) {
		if _, err := strconv.ParseInt(v, 10, 64); err == nil {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: v}, nil
		}
	}
	if v == "true" || v == "false" {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: v}, nil
	}
	return str(v), nil
}

// ErrDropsClassParameters means an edit of classes would remove classes
// that have parameters in the file, and with them their parameters.
var ErrDropsClassParameters = errors.New("the edit would drop class parameters")

// ApplyOptions change what Apply allows.
type ApplyOptions struct {
	// DropClassParameters lets classes= and classes=~ remove classes that
	// have parameters, parameters included. Without it such an edit is
	// refused with ErrDropsClassParameters.
	DropClassParameters bool
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
	// Keep strings that look like numbers or booleans ("1.10", "true")
	// strings: quote them when YAML would read them as something else,
	// and quote YAML 1.1's boolean words ("yes", "off"), which yaml.v3
	// reads as strings but a person, or a YAML 1.1 tool, may not.
	var probe any
	if yaml.Unmarshal([]byte(s), &probe) != nil {
		n.Style = yaml.DoubleQuotedStyle
	} else if _, ok := probe.(string); !ok || oldBool[strings.ToLower(s)] {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

var oldBool = map[string]bool{"y": true, "yes": true, "n": true, "no": true, "on": true, "off": true}

func seq(items []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
	for _, it := range items {
		n.Content = append(n.Content, str(it))
	}
	return n
}

// Apply makes the sets on a host document. It returns the classes it
// removed with their parameters ("nginx (parameters: port, upstreams)"),
// which it does only when opts allow it.
//
// classes= on a file whose classes are a mapping (class → parameters)
// keeps the mapping: the classes named keep their parameters and comments,
// new ones come without parameters, in the order given.
func (d *Document) Apply(opts ApplyOptions, sets ...Set) (dropped []string, err error) {
	root := d.doc.Content[0]
	for _, s := range sets {
		m, key := root, s.Key
		if p, ok := strings.CutPrefix(s.Key, "parameters."); ok {
			m, key = child(root, "parameters"), p
		}
		switch {
		case key == "classes" && m == root:
			gone, err := setClasses(root, s.Value, opts)
			if err != nil {
				return nil, err
			}
			dropped = append(dropped, gone...)
		case s.Value == "~":
			remove(m, key)
		case listKeys[key] && m == root:
			setValue(m, key, seq(listItems(s.Value)))
		case m != root:
			v, err := typedScalar(s.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.Key, err)
			}
			setValue(m, key, v)
		default:
			text, err := unquote(s.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.Key, err)
			}
			setValue(m, key, str(text))
		}
	}
	if p := lookup(root, "parameters"); p != nil && p.Kind == yaml.MappingNode && len(p.Content) == 0 {
		remove(root, "parameters")
	}
	return dropped, nil
}

func listItems(v string) []string {
	var items []string
	for _, it := range strings.Split(v, ",") {
		if it = strings.TrimSpace(it); it != "" {
			items = append(items, it)
		}
	}
	return items
}

// setClasses sets (or, for "~", removes) the classes of a host document.
// A list is replaced; a mapping keeps the entries of the classes still
// named (see Apply).
func setClasses(root *yaml.Node, value string, opts ApplyOptions) (dropped []string, err error) {
	old := lookup(root, "classes")
	if old == nil || old.Kind != yaml.MappingNode {
		if value == "~" {
			remove(root, "classes")
		} else {
			setValue(root, "classes", seq(listItems(value)))
		}
		return nil, nil
	}
	var names []string
	if value != "~" {
		names = listItems(value)
	}
	entries := map[string][2]*yaml.Node{}
	for i := 0; i+1 < len(old.Content); i += 2 {
		entries[old.Content[i].Value] = [2]*yaml.Node{old.Content[i], old.Content[i+1]}
	}
	for i := 0; i+1 < len(old.Content); i += 2 {
		name, v := old.Content[i].Value, old.Content[i+1]
		if slices.Contains(names, name) {
			continue
		}
		if ps := paramNames(v); len(ps) > 0 {
			dropped = append(dropped, fmt.Sprintf("%s (parameters: %s)", name, strings.Join(ps, ", ")))
		}
	}
	if len(dropped) > 0 && !opts.DropClassParameters {
		return nil, fmt.Errorf("%w: classes=%s removes %s", ErrDropsClassParameters, value, strings.Join(dropped, ", "))
	}
	if value == "~" {
		remove(root, "classes")
		return dropped, nil
	}
	var content []*yaml.Node
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		if e, ok := entries[name]; ok {
			content = append(content, e[0], e[1])
			continue
		}
		none := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
		if old.Style == yaml.FlowStyle {
			// An empty value in a flow mapping is encoded as '' (a string).
			none.Value = "~"
		}
		content = append(content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name}, none)
	}
	old.Content = content
	return dropped, nil
}

// paramNames are the parameters a class is given in a classes mapping:
// the keys of its mapping, or its whole value when that is something else
// (which validation reports).
func paramNames(v *yaml.Node) []string {
	switch {
	case v.Kind == yaml.MappingNode:
		var out []string
		for i := 0; i+1 < len(v.Content); i += 2 {
			out = append(out, v.Content[i].Value)
		}
		return out
	case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null":
		return nil
	}
	return []string{"its value"}
}

// SetPin sets pins.<service>.<role> to version.
func (d *Document) SetPin(service, role, version string) {
	setValue(child(child(d.doc.Content[0], "pins"), service), role, str(version))
}

// SetHost applies sets to a host file's contents and returns the new
// contents; an edit that would drop class parameters is refused.
func SetHost(data []byte, sets ...Set) ([]byte, error) {
	d, err := ParseDocument(data)
	if err != nil {
		return nil, err
	}
	if _, err := d.Apply(ApplyOptions{}, sets...); err != nil {
		return nil, err
	}
	return d.Bytes(), nil
}
