package ratelimit

import (
	"context"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxKeys is the key bound NewMemory uses when given none. An entry
// takes roughly 100 bytes plus the length of its key.
const DefaultMaxKeys = 1 << 20

const (
	// maxShards spreads the keys over enough locks that concurrent requests
	// rarely wait for one another.
	maxShards = 64
	// evictionSample is how many entries a full shard looks at to make room.
	// Sampling keeps an insert O(1) while every entry is live (many distinct
	// callers at once is exactly when the limiter must stay fast).
	evictionSample = 32
)

// Memory is a Limiter that keeps its state in this process. It is safe for
// concurrent use. The zero value is not usable; call NewMemory.
type Memory struct {
	now       func() time.Time
	epoch     time.Time
	seed      maphash.Seed
	mask      uint64
	shards    []shard
	evictions atomic.Uint64
}

var _ Limiter = (*Memory)(nil)

// entry identifies one bucket: state is per policy and key.
type entry struct {
	policy, key string
}

type shard struct {
	mu  sync.Mutex
	tat map[entry]time.Duration // theoretical arrival time, since Memory.epoch
	cap int
	_   [40]byte // keep shards on separate cache lines
}

// NewMemory returns an in-process GCRA limiter that reads the time from now
// (time.Now when nil) and holds at most maxKeys buckets (DefaultMaxKeys when
// maxKeys <= 0).
//
// When a new key arrives and its shard is full, the shard looks at a sample
// of its entries and drops those whose TAT has passed: they carry no state,
// so nobody notices. Only when none of the sample has expired does it evict a
// live entry, the one in the sample closest to expiring, whose caller
// therefore gets a fresh burst early; Evictions counts these.
func NewMemory(now func() time.Time, maxKeys int) *Memory {
	if now == nil {
		now = time.Now
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	n := 1
	for n*2 <= maxShards && n*2 <= maxKeys {
		n *= 2
	}
	m := &Memory{
		now:    now,
		epoch:  now(),
		seed:   maphash.MakeSeed(),
		mask:   uint64(n - 1),
		shards: make([]shard, n),
	}
	for i := range m.shards {
		// Share maxKeys out exactly, so the shards together never exceed it.
		m.shards[i].cap = maxKeys / n
		if i < maxKeys%n {
			m.shards[i].cap++
		}
		m.shards[i].tat = make(map[entry]time.Duration)
	}
	return m
}

// Allow implements Limiter. It returns an error only for an invalid policy.
func (m *Memory) Allow(ctx context.Context, key string, p Policy) (Decision, error) {
	interval, tolerance, err := p.gcra()
	if err != nil {
		return Decision{}, err
	}
	// Sub uses the monotonic clock when both times have one, so a wall-clock
	// step does not hand out or take away quota.
	now := m.now().Sub(m.epoch)
	e := entry{policy: p.Name, key: key}
	s := &m.shards[maphash.String(m.seed, key)&m.mask]

	s.mu.Lock()
	tat, known := s.tat[e]
	d, newTAT := decide(p.Limit, interval, tolerance, now, tat, known)
	if d.Allowed {
		if !known && len(s.tat) >= s.cap {
			m.makeRoom(s, now)
		}
		s.tat[e] = newTAT
	}
	s.mu.Unlock()
	return d, nil
}

// makeRoom frees at least one slot in the full shard s. The caller holds s.mu.
func (m *Memory) makeRoom(s *shard, now time.Duration) {
	var (
		freed     bool
		victim    entry
		victimTAT time.Duration = math.MaxInt64
		seen      int
	)
	// Map iteration starts at a random place, so this is a random sample.
	for e, tat := range s.tat {
		if tat <= now {
			delete(s.tat, e)
			freed = true
		} else if tat < victimTAT {
			victim, victimTAT = e, tat
		}
		if seen++; seen == evictionSample {
			break
		}
	}
	if !freed {
		delete(s.tat, victim)
		m.evictions.Add(1)
	}
}

// Sweep drops every entry whose TAT has passed and returns how many it
// dropped. Those entries carry no state, so calling it (say once a minute)
// only gives memory back; it never changes a decision.
func (m *Memory) Sweep() int {
	now := m.now().Sub(m.epoch)
	dropped := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for e, tat := range s.tat {
			if tat <= now {
				delete(s.tat, e)
				dropped++
			}
		}
		s.mu.Unlock()
	}
	return dropped
}

// Len returns the number of keys the limiter holds, never more than maxKeys.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.tat)
		s.mu.Unlock()
	}
	return n
}

// Evictions returns how many keys with live state were dropped to stay
// within maxKeys. A rising count means maxKeys is too small for the number of
// distinct callers: each eviction hands one caller a fresh burst.
func (m *Memory) Evictions() uint64 {
	return m.evictions.Load()
}
