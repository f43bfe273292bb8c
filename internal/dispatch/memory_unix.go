//go:build unix

package dispatch

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// memoryPool backs instances' linear memories with anonymous mappings of
// their maximum size, kept for reuse. A memory then grows in place, with
// no copy, and allocating it costs no Go heap (nor garbage collection).
// A returned memory is zeroed before it is reused, so nothing of one
// request is visible to the next.
type memoryPool struct {
	mu   sync.Mutex
	free map[uint64][]*linearMemory // by mapping size
	keep int                        // mappings kept per size
	live atomic.Int64               // memories handed out and not yet freed
}

func newMemoryPool(keep int) *memoryPool {
	return &memoryPool{free: map[uint64][]*linearMemory{}, keep: keep}
}

// with returns ctx carrying the pool as wazero's memory allocator.
func (p *memoryPool) with(ctx context.Context) context.Context {
	return experimental.WithMemoryAllocator(ctx, p)
}

// Allocate implements experimental.MemoryAllocator.
func (p *memoryPool) Allocate(_, max uint64) experimental.LinearMemory {
	if max == 0 {
		max = 1 << 16
	}
	p.live.Add(1)
	p.mu.Lock()
	if l := p.free[max]; len(l) > 0 {
		m := l[len(l)-1]
		p.free[max] = l[:len(l)-1]
		p.mu.Unlock()
		return m
	}
	p.mu.Unlock()
	buf, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return &heapMemory{pool: p}
	}
	return &linearMemory{pool: p, buf: buf}
}

// linearMemory is one mapping; used is how much of it an instance grew
// into.
type linearMemory struct {
	pool *memoryPool
	buf  []byte
	used uint64
}

func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		return nil
	}
	m.used = max(m.used, size)
	return m.buf[:size:size]
}

// dontNeedAbove is the used size above which a memory is zeroed by
// handing its pages back to the kernel rather than by clearing them.
const dontNeedAbove = 32 << 20

func (m *linearMemory) Free() {
	m.pool.live.Add(-1)
	if m.used > dontNeedAbove {
		if syscall.Madvise(m.buf[:m.used], syscall.MADV_DONTNEED) != nil {
			syscall.Munmap(m.buf)
			return
		}
	} else {
		clear(m.buf[:m.used])
	}
	m.used = 0
	p := m.pool
	size := uint64(len(m.buf))
	p.mu.Lock()
	if len(p.free[size]) < p.keep {
		p.free[size] = append(p.free[size], m)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	syscall.Munmap(m.buf)
}

func (p *memoryPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.free {
		for _, m := range l {
			syscall.Munmap(m.buf)
		}
		delete(p.free, k)
	}
}

// heapMemory is the fallback when a mapping fails: a Go slice.
type heapMemory struct {
	pool *memoryPool
	buf  []byte
}

func (m *heapMemory) Reallocate(size uint64) []byte {
	if size > uint64(cap(m.buf)) {
		nb := make([]byte, size, size+size/2)
		copy(nb, m.buf)
		m.buf = nb
	}
	m.buf = m.buf[:size]
	return m.buf
}

func (m *heapMemory) Free() { m.pool.live.Add(-1) }

// inUse reports how many memories are handed out.
func (p *memoryPool) inUse() int64 { return p.live.Load() }
