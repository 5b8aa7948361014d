package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"
)

// natsUsers are the users of deploy/nats/accounts.conf, one per service
// plus the CLI, CI and operators. accounts.conf refers to each one's public
// key as $<NAME>_NKEY.
var natsUsers = []string{"chat", "lb", "dns", "deployer", "incidents", "watcher", "cli", "ci", "admin"}

// nkeysCmd writes a seed file per user and the nkeys.conf that
// deploy/nats/accounts.conf includes. Existing seeds are kept, so running it
// again after adding a user does not lock the others out.
func nkeysCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("nkeys", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	out := fs.String("out", "", "directory for the seed files and nkeys.conf")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *out == "" || fs.NArg() > 0 {
		return usageError{errors.New("usage: switchboard nkeys --out DIR")}
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return fmt.Errorf("nkeys: %w", err)
	}
	var conf strings.Builder
	conf.WriteString("# Public keys of switchboard's NATS users, written by `switchboard nkeys`.\n" +
		"# The seeds (*.nk, mode 0600) are the secrets: give each service only its own.\n")
	for _, user := range natsUsers {
		pub, err := userKey(filepath.Join(*out, user+".nk"))
		if err != nil {
			return fmt.Errorf("nkeys: %s: %w", user, err)
		}
		fmt.Fprintf(&conf, "%s_NKEY: %q\n", strings.ToUpper(user), pub)
	}
	if err := os.WriteFile(filepath.Join(*out, "nkeys.conf"), []byte(conf.String()), 0o644); err != nil {
		return fmt.Errorf("nkeys: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %d seeds and nkeys.conf to %s\n", len(natsUsers), *out)
	return nil
}

// userKey reads the user seed at path, or creates one, and returns its
// public key.
func userKey(path string) (string, error) {
	seed, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", err
		}
		if seed, err = kp.Seed(); err != nil {
			return "", err
		}
		if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		return "", fmt.Errorf("read seed %s: %w", path, err)
	}
	return kp.PublicKey()
}
