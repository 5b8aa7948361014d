package enc_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	inventoryv1 "github.com/switchboard-ops/switchboard/proto/sb/inventory/v1"
	"github.com/switchboard-ops/switchboard/services/deployer/enc"
)

func load(t *testing.T, files map[string][]byte) (*enc.Inventory, enc.Problems) {
	t.Helper()
	inv, probs, err := enc.NewLoader().Load(enc.MapSource(files))
	if err != nil {
		t.Fatal(err)
	}
	return inv, probs
}

func TestTheExampleInventoryIsValid(t *testing.T) {
	inv, probs := load(t, enc.Example())
	if len(probs) > 0 {
		t.Fatalf("problems in the example: %v", probs)
	}
	if len(inv.HostsOf("web", "production")) != 2 || len(inv.Spares()) != 2 {
		t.Fatalf("example: %d web hosts, %d spares", len(inv.HostsOf("web", "production")), len(inv.Spares()))
	}
	if got := inv.Pins()["production/carbonpickle/api"]; got != "0.2.9.11" {
		t.Fatalf("pin = %q", got)
	}
}

func TestValidationFindsWhatPeopleGetWrong(t *testing.T) {
	files := enc.Example()
	files[enc.HostPath("web-0003")] = []byte("environment: production\nrole: web\nipv4: 10.0.1.1\nbackends: [www]\n") // duplicate IP
	files[enc.HostPath("web-0004")] = []byte("environment: production\nrole: web\nipv4: 10.0.1.4\nbakends: [www]\n")  // unknown key
	files[enc.HostPath("web-0005")] = []byte("environment: production\nrole: web\nipv4: 10.0.1.5\nbackends: [nope]\n")
	files[enc.HostPath("web-0006")] = []byte("environment: moon\nrole: web\nipv4: 10.0.1.6\n")
	files[enc.HostPath("web-0007")] = []byte("environment: production\nrole: web\nipv4: 10.0.1.300\nstate: gone\n")
	files[enc.HostPath("Bad_Name")] = []byte("state: spare\n")
	files[enc.HostPath("web-0008")] = []byte("- not\n- a mapping\n")
	_, probs := load(t, files)
	all := probs.Error()
	for _, want := range []string{
		"hosts/web-0003.yaml: IP address 10.0.1.1 is also web-0001's",
		`hosts/web-0004.yaml:4: unknown key "bakends"`,
		"hosts/web-0005.yaml: backend nope does not exist in environment production",
		"hosts/web-0006.yaml: environment moon does not exist",
		`hosts/web-0007.yaml:3: ipv4 "10.0.1.300" is not an IPv4 address`,
		`hosts/web-0007.yaml:4: state "gone" is not active, spare or decommissioned`,
		`"Bad_Name" is not a host name`,
		"hosts/web-0008.yaml: must be a YAML mapping",
	} {
		found := false
		for _, p := range probs {
			if strings.Contains(p.String(), want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem %q in:\n%s", want, all)
		}
	}
}

func TestClassifyAnswersWhatPuppetExpects(t *testing.T) {
	inv, _ := load(t, enc.Example())
	for _, name := range []string{"api-0001", "api-0001.example.com"} {
		out, err := inv.Classify(name)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Classes     []string          `yaml:"classes"`
			Parameters  map[string]string `yaml:"parameters"`
			Environment string            `yaml:"environment"`
		}
		if err := yaml.Unmarshal(out, &got); err != nil {
			t.Fatalf("classify output is not YAML: %v\n%s", err, out)
		}
		if got.Environment != "production" || strings.Join(got.Classes, ",") != "base,role::api" ||
			got.Parameters["carbonpickle_version"] != "0.2.9.11" || got.Parameters["ntp_server"] != "ntp.example.com" || got.Parameters["role"] != "api" {
			t.Fatalf("classify %s:\n%s", name, out)
		}
	}
	if _, err := inv.Classify("nope"); err == nil {
		t.Fatal("an unknown host was classified")
	}
	if _, err := enc.Classify(enc.MapSource(enc.Example()), "web-0001"); err != nil {
		t.Fatal(err)
	}
}

func TestEditsKeepCommentsAndKeyOrder(t *testing.T) {
	in := "# rack 4, slot 12\nenvironment: production\nrole: web # the role\nipv4: 10.0.1.1\nbackends: [www]\nparameters:\n  # why\n  a: \"1\"\n"
	sets := []enc.Set{{Key: "ipv4", Value: "10.0.1.9"}, {Key: "backends", Value: "www,api"}, {Key: "parameters.b", Value: "1.10"}, {Key: "fqdn", Value: "x.example.com"}}
	out, err := enc.SetHost([]byte(in), sets...)
	if err != nil {
		t.Fatal(err)
	}
	want := "# rack 4, slot 12\nenvironment: production\nrole: web # the role\nipv4: 10.0.1.9\nbackends: [www, api]\nparameters:\n  # why\n  a: \"1\"\n  b: \"1.10\"\nfqdn: x.example.com\n"
	if string(out) != want {
		t.Fatalf("edit:\n%s\nwant:\n%s", out, want)
	}
	h, probs := enc.ParseHost("web-0001", out)
	if len(probs) > 0 || h.Parameters["b"] != "1.10" {
		t.Fatalf("the edited file does not parse back: %v %+v", probs, h)
	}
	out, _ = enc.SetHost(out, enc.Set{Key: "fqdn", Value: "~"})
	if strings.Contains(string(out), "fqdn") {
		t.Fatalf("~ did not remove the key:\n%s", out)
	}
	if _, err := enc.ParseSet("colour=blue"); err == nil {
		t.Fatal("an unknown key was accepted")
	}
}

func TestPinsAndProto(t *testing.T) {
	d, _ := enc.ParseDocument(enc.Example()[enc.EnvPath("production")])
	d.SetPin("frontend", "web", "1.1.0")
	d.SetPin("newsvc", "api", "0.1")
	files := enc.Example()
	files[enc.EnvPath("production")] = d.Bytes()
	inv, probs := load(t, files)
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	if p := inv.Pins(); p["production/frontend/web"] != "1.1.0" || p["production/newsvc/api"] != "0.1" || p["staging/frontend/web"] != "1.0.0" {
		t.Fatalf("pins: %v", p)
	}
	if !strings.Contains(string(d.Bytes()), "# service → role → version") {
		t.Fatalf("the comment above pins was lost:\n%s", d.Bytes())
	}
	for _, h := range inv.Proto() {
		if h.GetName() == "spare-0001" && h.GetState() != inventoryv1.HostState_HOST_STATE_SPARE {
			t.Fatalf("spare-0001: %v", h)
		}
		if h.GetName() == "web-0001" && (h.GetParameters()["frontend_version"] != "1.1.0" || h.GetState() != inventoryv1.HostState_HOST_STATE_ACTIVE) {
			t.Fatalf("web-0001: %v", h)
		}
	}
}

func TestClassifyFindsTheHostPuppetMeansAndRefusesToGuess(t *testing.T) {
	files := enc.Example()
	files[enc.HostPath("web1")] = []byte("environment: production\nrole: web\nfqdn: web1.prod.example.com\nipv4: 10.0.1.11\n")
	files[enc.HostPath("web1-stg")] = []byte("environment: staging\nrole: web\nfqdn: web1.staging.example.com\nipv4: 10.1.1.11\n")
	files[enc.HostPath("db3")] = []byte("environment: production\nrole: api\nipv4: 10.0.2.3\n")
	files[enc.HostPath("app-a")] = []byte("environment: production\nrole: api\nfqdn: app.prod.example.com\nipv4: 10.0.2.4\n")
	files[enc.HostPath("app-b")] = []byte("environment: staging\nrole: web\nfqdn: app.staging.example.com\nipv4: 10.1.1.4\n")
	inv, probs := load(t, files)
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	for _, tc := range []struct {
		name, certname, host, env string
		err                       error
		says                      string
	}{
		{"the exact fqdn wins over a host named like its first label", "web1.staging.example.com", "web1-stg", "staging", nil, ""},
		{"the other fqdn gets the other host", "WEB1.prod.example.com.", "web1", "production", nil, ""},
		{"a host name is a host name", "web1", "web1", "production", nil, ""},
		{"a dotted name falls back to a host without an fqdn", "db3.example.com", "db3", "production", nil, ""},
		{"a dotted name is not a host whose fqdn says otherwise", "web1.dev.example.com", "", "", enc.ErrUnknownHost, "host web1 is web1.prod.example.com"},
		{"a short name of one fqdn is that host", "stg-web-0001", "stg-web-0001", "staging", nil, ""},
		{"a short name of several fqdns is refused", "app", "", "", enc.ErrAmbiguousHost, "app-a (app.prod.example.com), app-b (app.staging.example.com)"},
		{"an unknown name is unknown", "nope", "", "", enc.ErrUnknownHost, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := inv.Lookup(tc.certname)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !strings.Contains(fmt.Sprint(err), tc.says) {
					t.Fatalf("Lookup(%s) = %v, %v; want %v saying %q", tc.certname, h, err, tc.err, tc.says)
				}
				if _, cerr := inv.Classify(tc.certname); !errors.Is(cerr, tc.err) {
					t.Fatalf("Classify(%s) error %v, want %v", tc.certname, cerr, tc.err)
				}
				return
			}
			if err != nil || h.Name != tc.host {
				t.Fatalf("Lookup(%s) = %v, %v; want %s", tc.certname, h, err, tc.host)
			}
			out, err := inv.Classify(tc.certname)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Environment string `yaml:"environment"`
			}
			if err := yaml.Unmarshal(out, &got); err != nil || got.Environment != tc.env {
				t.Fatalf("Classify(%s): environment %q (%v), want %s:\n%s", tc.certname, got.Environment, err, tc.env, out)
			}
		})
	}

	files[enc.HostPath("web1-new")] = []byte("environment: production\nrole: web\nfqdn: web1.prod.example.com\nipv4: 10.0.1.12\n")
	if _, probs := load(t, files); !strings.Contains(probs.Error(), "hosts/web1-new.yaml: fqdn web1.prod.example.com is also web1's") {
		t.Fatalf("two hosts with one fqdn are not a problem: %v", probs)
	}
}

func TestClassifyGivesPuppetParametersWithTheirYAMLTypes(t *testing.T) {
	files := enc.Example()
	files[enc.EnvPath("production")] = []byte(`backends: [www, api]
classes: [base]
parameters:
  ntp_server: ntp.example.com
  workers: 4
roles:
  web:
    backends: [www]
    classes:
      role::web:
      nginx:
        port: 80
        tls: false
  api:
    backends: [api]
    classes: [role::api]
pins:
  frontend: {web: 1.0.0}
`)
	files[enc.HostPath("web-0001")] = []byte(`environment: production
role: web
fqdn: web-0001.example.com
ipv4: 10.0.1.1
backends: [www]
classes:
  nginx: {port: 8080, upstreams: [a, b]}
  monitoring:
parameters:
  workers: 16
  debug: true
  ratio: 0.5
  dns: [10.0.0.1, 10.0.0.2]
  limits: {nofile: 65536, core: unlimited}
  quoted: "8080"
  word: yes
  since: 2024-01-31
  empty: ~
`)
	inv, probs := load(t, files)
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	out, err := inv.Classify("web-0001.example.com")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatalf("classify output is not YAML: %v\n%s", err, out)
	}
	want := map[string]any{
		"environment": "production",
		// A class with parameters makes classes Puppet's mapping form;
		// the host's nginx parameters win over the role's, key by key.
		"classes": map[string]any{
			"base":       nil,
			"role::web":  nil,
			"nginx":      map[string]any{"port": 8080, "tls": false, "upstreams": []any{"a", "b"}},
			"monitoring": nil,
		},
		"parameters": map[string]any{
			"ntp_server": "ntp.example.com", "workers": 16, "debug": true, "ratio": 0.5,
			"dns":    []any{"10.0.0.1", "10.0.0.2"},
			"limits": map[string]any{"nofile": 65536, "core": "unlimited"},
			"quoted": "8080", "word": "yes", "since": "2024-01-31", "empty": nil,
			"role": "web", "environment": "production", "frontend_version": "1.0.0",
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("classify (-want +got):\n%s\n%s", diff, out)
	}
	// Classes keep their order: the environment's, the role's, the host's.
	var order struct {
		Classes yaml.Node `yaml:"classes"`
	}
	yaml.Unmarshal(out, &order)
	var names []string
	for i := 0; i < len(order.Classes.Content); i += 2 {
		names = append(names, order.Classes.Content[i].Value)
	}
	if strings.Join(names, ",") != "base,role::web,nginx,monitoring" {
		t.Fatalf("class order %v:\n%s", names, out)
	}
	// Strings that YAML 1.1 readers (Puppet's Ruby) would take for
	// booleans or numbers are quoted.
	for _, line := range []string{`word: "yes"`, `quoted: "8080"`, `since: "2024-01-31"`} {
		if !strings.Contains(string(out), line) {
			t.Errorf("output lacks %s:\n%s", line, out)
		}
	}

	// The published inventory carries parameters as text.
	for _, h := range inv.Proto() {
		if h.GetName() != "web-0001" {
			continue
		}
		p := h.GetParameters()
		for k, v := range map[string]string{"workers": "16", "debug": "true", "dns": "[10.0.0.1, 10.0.0.2]", "limits": "{core: unlimited, nofile: 65536}", "quoted": "8080", "empty": ""} {
			if p[k] != v {
				t.Errorf("published parameter %s = %q, want %q", k, p[k], v)
			}
		}
		if strings.Join(h.GetClasses(), ",") != "base,role::web,nginx,monitoring" {
			t.Errorf("published classes %v", h.GetClasses())
		}
	}

	// Without class parameters, classes stay a list.
	out, err = inv.Classify("api-0001")
	if err != nil {
		t.Fatal(err)
	}
	var plain struct {
		Classes []string `yaml:"classes"`
	}
	if err := yaml.Unmarshal(out, &plain); err != nil || strings.Join(plain.Classes, ",") != "base,role::api" {
		t.Fatalf("classes of api-0001: %v (%v)\n%s", plain.Classes, err, out)
	}

	files[enc.HostPath("web-0002")] = []byte("environment: production\nrole: web\nipv4: 10.0.1.2\nclasses: {nginx: [80]}\nparameters: [a]\n")
	_, probs = load(t, files)
	for _, want := range []string{"hosts/web-0002.yaml:4: parameters of class nginx must be a mapping", "hosts/web-0002.yaml:5: expected a mapping of parameter name to value"} {
		if !strings.Contains(probs.Error(), want) {
			t.Errorf("no problem %q in:\n%v", want, probs)
		}
	}
}

func TestEncSetWritesParametersAsAPersonWouldTypeThemInTheFile(t *testing.T) {
	in := "# rack 4, slot 12\nenvironment: production\nrole: web # the role\nipv4: 10.0.1.1\nbackends: [www]\nparameters:\n  # tuned by hand\n  workers: \"4\" # was a string\n"
	var sets []enc.Set
	for _, kv := range []string{
		"parameters.workers=16",
		"parameters.port=8080",
		"parameters.offset=-1",
		"parameters.debug=true",
		"parameters.tls=false",
		`parameters.build="0012"`,
		`parameters.zone='8080'`,
		`parameters.motd="hello, world"`,
		`parameters.literal="~"`,
		`parameters.blank=""`,
		"parameters.version=1.10",
		"parameters.mode=0755",
		"parameters.huge=99999999999999999999",
		"parameters.answer=yes",
		"parameters.shout=TRUE",
		"parameters.ntp_server=ntp2.example.com",
		"role=8080",
	} {
		s, err := enc.ParseSet(kv)
		if err != nil {
			t.Fatalf("ParseSet(%s): %v", kv, err)
		}
		sets = append(sets, s)
	}
	out, err := enc.SetHost([]byte(in), sets...)
	if err != nil {
		t.Fatal(err)
	}
	want := `# rack 4, slot 12
environment: production
role: "8080" # the role
ipv4: 10.0.1.1
backends: [www]
parameters:
  # tuned by hand
  workers: 16 # was a string
  port: 8080
  offset: -1
  debug: true
  tls: false
  build: "0012"
  zone: "8080"
  motd: hello, world
  literal: "~"
  blank: ""
  version: "1.10"
  mode: "0755"
  huge: "99999999999999999999"
  answer: "yes"
  shout: "TRUE"
  ntp_server: ntp2.example.com
`
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Fatalf("file after enc set (-want +got):\n%s", diff)
	}

	// Puppet gets each parameter with the type the file gives it.
	files := enc.Example()
	files[enc.HostPath("web-0001")] = []byte(strings.Replace(string(out), `role: "8080"`, "role: web", 1))
	inv, probs := load(t, files)
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	answer, err := inv.Classify("web-0001")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Parameters map[string]any `yaml:"parameters"`
	}
	if err := yaml.Unmarshal(answer, &got); err != nil {
		t.Fatalf("classify output is not YAML: %v\n%s", err, answer)
	}
	for k, v := range map[string]any{
		"workers": 16, "port": 8080, "offset": -1, "debug": true, "tls": false,
		"build": "0012", "zone": "8080", "motd": "hello, world", "literal": "~", "blank": "",
		"version": "1.10", "mode": "0755", "huge": "99999999999999999999", "answer": "yes", "shout": "TRUE",
	} {
		if diff := cmp.Diff(v, got.Parameters[k]); diff != "" {
			t.Errorf("parameter %s reaches Puppet as %T %v, want %T %v\n%s", k, got.Parameters[k], got.Parameters[k], v, v, answer)
		}
	}

	for _, tc := range []struct{ kv, typ string }{
		{"parameters.port=8080", "integer"},
		{"parameters.debug=false", "boolean"},
		{`parameters.port="8080"`, "string"},
		{"parameters.v=1.10", "string"},
		{"parameters.port=~", ""},
		{"ipv4=10.0.1.9", "string"},
		{"backends=www,api", ""},
	} {
		s, err := enc.ParseSet(tc.kv)
		if err != nil || s.Type() != tc.typ {
			t.Errorf("ParseSet(%s).Type() = %q (%v), want %q", tc.kv, s.Type(), err, tc.typ)
		}
	}
	for _, kv := range []string{`parameters.motd="unterminated`, `parameters.motd="a" "b"`, `parameters.motd='it's'`, `backends="www"`} {
		if _, err := enc.ParseSet(kv); err == nil {
			t.Errorf("ParseSet(%s) accepted a value that is not one quoted string", kv)
		}
	}
}

func TestSettingClassesKeepsTheParametersOfTheClassesStillNamed(t *testing.T) {
	in := `environment: production
role: web
ipv4: 10.0.1.1
classes:
  # tuned for the new kernel
  nginx: {port: 8080, upstreams: [a, b]} # see OPS-12
  monitoring:
  old_agent:
`
	for _, tc := range []struct {
		name  string
		value string
		drop  bool
		want  string
		// dropped is what Apply says it removed with parameters; err, when
		// set, is what the refusal says.
		dropped []string
		err     string
	}{
		{
			name:  "the classes named keep their parameters and comments, a new one comes without, in the order given",
			value: "base,nginx,monitoring",
			want: `environment: production
role: web
ipv4: 10.0.1.1
classes:
  base:
  # tuned for the new kernel
  nginx: {port: 8080, upstreams: [a, b]} # see OPS-12
  monitoring:
`,
		},
		{
			name:  "removing a class that has parameters is refused",
			value: "base,monitoring",
			err:   "classes=base,monitoring removes nginx (parameters: port, upstreams)",
		},
		{
			name:  "removing every class is refused when one has parameters",
			value: "~",
			err:   "classes=~ removes nginx (parameters: port, upstreams)",
		},
		{
			name:  "with DropClassParameters the class goes with its parameters",
			value: "monitoring",
			drop:  true,
			want: `environment: production
role: web
ipv4: 10.0.1.1
classes:
  monitoring:
`,
			dropped: []string{"nginx (parameters: port, upstreams)"},
		},
		{
			name:  "with DropClassParameters ~ removes the classes",
			value: "~",
			drop:  true,
			want: `environment: production
role: web
ipv4: 10.0.1.1
`,
			dropped: []string{"nginx (parameters: port, upstreams)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := enc.ParseDocument([]byte(in))
			if err != nil {
				t.Fatal(err)
			}
			dropped, err := d.Apply(enc.ApplyOptions{DropClassParameters: tc.drop}, enc.Set{Key: "classes", Value: tc.value})
			if tc.err != "" {
				if !errors.Is(err, enc.ErrDropsClassParameters) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Apply(classes=%s) = %v; want %v saying %q", tc.value, err, enc.ErrDropsClassParameters, tc.err)
				}
				if string(d.Bytes()) != in {
					t.Fatalf("a refused edit changed the document:\n%s", d.Bytes())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(d.Bytes())); diff != "" {
				t.Errorf("file (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.dropped, dropped); diff != "" {
				t.Errorf("dropped (-want +got):\n%s", diff)
			}
			if h, probs := enc.ParseHost("web-0001", d.Bytes()); len(probs) > 0 {
				t.Errorf("the edited file has problems: %v (%+v)", probs, h)
			}
		})
	}

	// SetHost, which host provision and retire use, refuses such an edit too.
	if _, err := enc.SetHost([]byte(in), enc.Set{Key: "classes", Value: "base"}); !errors.Is(err, enc.ErrDropsClassParameters) {
		t.Fatalf("SetHost(classes=base) = %v, want %v", err, enc.ErrDropsClassParameters)
	}
	// A flow mapping stays one, and a new class in it is null, not ''.
	out, err := enc.SetHost([]byte("classes: {nginx: {port: 1}, monitoring: }\n"), enc.Set{Key: "classes", Value: "nginx,base"})
	if err != nil || string(out) != "classes: {nginx: {port: 1}, base: ~}\n" {
		t.Fatalf("flow mapping: %v\n%s", err, out)
	}
	h, _ := enc.ParseHost("web-0001", out)
	if strings.Join(h.Classes, ",") != "nginx,base" || h.ClassParams["nginx"]["port"] != 1 {
		t.Fatalf("flow mapping parsed back: %+v", h)
	}
	// Classes written as a list stay a list.
	out, err = enc.SetHost([]byte("classes: [a, b]\n"), enc.Set{Key: "classes", Value: "b,c"})
	if err != nil || string(out) != "classes: [b, c]\n" {
		t.Fatalf("list: %v\n%s", err, out)
	}
}
