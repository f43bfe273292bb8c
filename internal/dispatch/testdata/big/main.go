//go:build wasip1

// Command big is a worker of about 5 MB for the upload-to-serving
// benchmark: a CGI responder that links in a good part of the standard
// library, so that its size is code the compiler has to translate.
package main

import (
	"archive/zip"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"html/template"
	"math/big"
	"os"
	"regexp"
	"text/tabwriter"
)

func main() {
	if os.Getenv("QUERY_STRING") == "all" {
		// Never taken in the benchmark; keeps the packages linked.
		_ = zip.NewWriter(os.Stderr)
		_, _ = gzip.NewReader(os.Stdin)
		_ = sha256.Sum256(nil)
		_, _ = json.Marshal(map[string]any{})
		_ = xml.NewEncoder(os.Stderr)
		_ = template.Must(template.New("x").Parse("{{.}}"))
		_ = new(big.Int).Exp(big.NewInt(2), big.NewInt(100), nil)
		_ = regexp.MustCompile("a+b")
		_ = tabwriter.NewWriter(os.Stderr, 0, 0, 0, ' ', 0)
	}
	fmt.Print("Content-Type: text/plain\n\nbig\n")
}
