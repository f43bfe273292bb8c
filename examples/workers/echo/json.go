//go:build wasip1

package main

import "encoding/json"

func marshal(v any) []byte {
	b, _ := json.Marshal(v)
	return append(b, '\n')
}
