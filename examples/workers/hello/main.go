//go:build wasip1

// Command hello is the smallest Go worker: it answers every request with a
// greeting, from the GREETING environment variable set at deploy time.
package main

import "os"

func main() {
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "Hello"
	}
	os.Stdout.WriteString("Content-Type: text/plain; charset=utf-8\n\n" + greeting + " from " + os.Getenv("DOTDO_SCRIPT") + "\n")
}
