package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/switchboard-ops/switchboard/services/deployer/enc"
)

// encCmd is `switchboard enc classify [--repo DIR] HOST`: Puppet's
// external_nodes script, reading a checkout of the ENC repository.
func encCmd(args []string, stdout, stderr io.Writer) int {
	const use = "usage: switchboard enc classify [--repo DIR] HOST"
	if len(args) == 0 || args[0] != "classify" {
		fmt.Fprintln(stderr, use)
		return exitUsage
	}
	fs := flag.NewFlagSet("enc classify", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	repo := fs.String("repo", ".", "a checkout of the ENC repository")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, use)
		return exitUsage
	}
	out, err := enc.Classify(enc.DirSource(*repo), fs.Arg(0))
	if err != nil {
		// Puppet then refuses to compile a catalog, which is what we want
		// for a host the ENC does not know or an ENC with problems.
		fmt.Fprintf(stderr, "switchboard enc classify: %v\n", err)
		return exitFailed
	}
	stdout.Write(out)
	return exitOK
}
