package enc_test

import (
	"strings"
	"testing"

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
