//go:build !unix

package dispatch

import "context"

// memoryPool is a no-op where anonymous mappings are not available:
// wazero allocates memories on the Go heap.
type memoryPool struct{}

func newMemoryPool(int) *memoryPool                            { return &memoryPool{} }
func (p *memoryPool) with(ctx context.Context) context.Context { return ctx }
func (p *memoryPool) close()                                   {}
func (p *memoryPool) inUse() int64                             { return 0 }
