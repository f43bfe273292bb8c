// Package dotdo is the root of the dotdo module. It holds only the code
// generation step: `go generate ./...` rebuilds internal/gen from proto/ with
// pinned generator versions.
package dotdo

//go:generate go run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate
