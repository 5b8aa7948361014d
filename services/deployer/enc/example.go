package enc

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DirSource reads the ENC from a checkout on disk (what Puppet's
// external_nodes script uses).
type DirSource string

// List returns the .yaml files of dir, keyed by content hash.
func (d DirSource) List(dir string) ([]Entry, error) {
	des, err := os.ReadDir(filepath.Join(string(d), dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, de := range des {
		if de.Type().IsRegular() && !strings.HasPrefix(de.Name(), ".") {
			out = append(out, Entry{Name: de.Name()})
		}
	}
	return out, nil
}

// ReadFile reads one file.
func (d DirSource) ReadFile(p string) ([]byte, error) {
	return os.ReadFile(filepath.Join(string(d), filepath.FromSlash(p)))
}

// MapSource is an ENC in memory (tests, the example).
type MapSource map[string][]byte

// List returns the files directly under dir.
func (m MapSource) List(dir string) ([]Entry, error) {
	var out []Entry
	for p, data := range m {
		if name, ok := strings.CutPrefix(p, dir+"/"); ok && !strings.Contains(name, "/") {
			sum := sha256.Sum256(data)
			out = append(out, Entry{Name: name, Key: hex.EncodeToString(sum[:8])})
		}
	}
	return out, nil
}

// ReadFile returns one file.
func (m MapSource) ReadFile(p string) ([]byte, error) {
	if d, ok := m[p]; ok {
		return d, nil
	}
	return nil, fs.ErrNotExist
}

// Example is the inventory a new local ENC repository starts with: two
// environments, a few hosts and a spare pool, so every command has
// something to work on.
func Example() map[string][]byte {
	return map[string][]byte{
		"README.md": []byte(exampleReadme),
		EnvPath("production"): []byte(`# production: what runs where, and at which version.
backends: [www, api]
classes: [base]
parameters:
  ntp_server: ntp.example.com
roles:
  web:
    backends: [www]
    classes: [role::web]
  api:
    backends: [api]
    classes: [role::api]
# service → role → version; "deploy" changes these.
pins:
  frontend:
    web: 1.0.0
  carbonpickle:
    api: 0.2.9.11
`),
		EnvPath("staging"): []byte(`backends: [www]
classes: [base]
roles:
  web:
    backends: [www]
    classes: [role::web]
pins:
  frontend:
    web: 1.0.0
`),
		HostPath("web-0001"):     []byte("# rack 4, slot 12\nenvironment: production\nrole: web\nfqdn: web-0001.example.com\nipv4: 10.0.1.1\nbackends: [www]\n"),
		HostPath("web-0002"):     []byte("environment: production\nrole: web\nfqdn: web-0002.example.com\nipv4: 10.0.1.2\nbackends: [www]\n"),
		HostPath("api-0001"):     []byte("environment: production\nrole: api\nfqdn: api-0001.example.com\nipv4: 10.0.2.1\nbackends: [api]\n"),
		HostPath("stg-web-0001"): []byte("environment: staging\nrole: web\nfqdn: stg-web-0001.example.com\nipv4: 10.1.1.1\nbackends: [www]\n"),
		HostPath("spare-0001"):   []byte("# in the spare pool: \"host provision\" takes it\nstate: spare\nfqdn: spare-0001.example.com\nipv4: 10.9.0.1\n"),
		HostPath("spare-0002"):   []byte("state: spare\nfqdn: spare-0002.example.com\nipv4: 10.9.0.2\n"),
	}
}

const exampleReadme = `# ENC — the inventory

This repository is switchboard's inventory and Puppet's external node
classifier. The deployer service commits to it (as the bot, with the person
who asked as co-author); people may commit and push too.

    environments/<env>.yaml   backends, roles, classes, parameters, pins (service → role → version)
    hosts/<name>.yaml         environment, role, state (active | spare | decommissioned),
                              fqdn, ipv4, ipv6, backends, classes, parameters

Puppet: external_nodes = switchboard enc classify --repo <checkout>
`
