//go:build !unix

package ratelimit

import "time"

// processCPUTime is not measured here; the benchmarks then report ns/op only.
func processCPUTime() time.Duration { return 0 }
