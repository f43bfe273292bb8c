// Command dotdo runs the dotdo platform: `dotdo serve` starts every
// service in one process; `dotdo serve --services ...` runs some of them,
// for split deployments. `dotdo help` lists the commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		if err != errUsage {
			fmt.Fprintln(os.Stderr, "dotdo:", err)
		}
		os.Exit(1)
	}
}
