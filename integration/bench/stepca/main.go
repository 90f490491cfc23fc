// Command step-ca for the benchmark (integration/bench/stepca.py): Smallstep's CA server
// built from Debian's golang-github-smallstep-certificates-dev, which ships the library
// but not cmd/step-ca.  Only the software key manager and the in-process CA service are
// linked: the benchmark's keys are PEM files and step-ca signs in the request.
//
// Build (offline, Debian's GOPATH):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o step-ca .
//
// Usage: step-ca CONFIG [--password-file FILE] [--resolver HOST:PORT] (commands.AppCommand).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/smallstep/certificates/commands"
	"github.com/urfave/cli"

	_ "github.com/smallstep/certificates/cas/softcas"
	_ "github.com/smallstep/certificates/kms/softkms"
)

func main() {
	app := cli.NewApp()
	app.Name = "step-ca"
	app.Usage = "Smallstep CA, benchmark build"
	app.Flags = commands.AppCommand.Flags
	app.Action = func(*cli.Context) error {
		// AppCommand parses its own flags from the arguments after the program name.
		all := flag.NewFlagSet(app.Name, flag.ContinueOnError)
		if err := all.Parse(os.Args); err != nil {
			return err
		}
		return commands.AppCommand.Run(cli.NewContext(app, all, nil))
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
