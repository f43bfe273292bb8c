package ratelimit

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// benchPolicy allows a steady stream, so the benchmarks measure a mix of
// allowed and denied decisions as a busy gateway makes them.
var benchPolicy = Policy{Name: "default", Limit: 1000, Period: time.Second}

// cpuPerOp adds a cpu-ns/op metric: the process's CPU time per operation
// since start. Unlike ns/op it does not grow when other processes compete for
// the cores, so it is the number to compare across runs on a shared machine.
// In parallel benchmarks it adds up the time of every goroutine.
func cpuPerOp(b *testing.B, start time.Duration) {
	if end := processCPUTime(); end > 0 && b.N > 0 {
		b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
	}
}

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "key_" + strconv.Itoa(i)
	}
	return keys
}

// BenchmarkMemoryAllow measures one in-memory decision with the real clock
// (time.Now is part of the cost a gateway pays).
func BenchmarkMemoryAllow(b *testing.B) {
	ctx := context.Background()
	many := benchKeys(1 << 16)

	b.Run("one-key", func(b *testing.B) {
		m := NewMemory(nil, 0)
		start := processCPUTime()
		for b.Loop() {
			if _, err := m.Allow(ctx, "key_1", benchPolicy); err != nil {
				b.Fatal(err)
			}
		}
		cpuPerOp(b, start)
	})
	b.Run("many-keys", func(b *testing.B) {
		m := NewMemory(nil, 0)
		i := 0
		start := processCPUTime()
		for b.Loop() {
			if _, err := m.Allow(ctx, many[i&(len(many)-1)], benchPolicy); err != nil {
				b.Fatal(err)
			}
			i++
		}
		cpuPerOp(b, start)
	})
	b.Run("many-keys-evicting", func(b *testing.B) {
		// 65536 live callers squeezed into 4096 slots: every new key evicts.
		m := NewMemory(nil, 4096)
		i := 0
		start := processCPUTime()
		for b.Loop() {
			if _, err := m.Allow(ctx, many[i&(len(many)-1)], benchPolicy); err != nil {
				b.Fatal(err)
			}
			i++
		}
		cpuPerOp(b, start)
	})
	b.Run("one-key-parallel", func(b *testing.B) {
		m := NewMemory(nil, 0)
		start := processCPUTime()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Allow(ctx, "key_1", benchPolicy); err != nil {
					b.Error(err)
					return
				}
			}
		})
		cpuPerOp(b, start)
	})
	b.Run("many-keys-parallel", func(b *testing.B) {
		m := NewMemory(nil, 0)
		start := processCPUTime()
		b.RunParallel(func(pb *testing.PB) {
			i := int(time.Now().UnixNano()) // each goroutine starts elsewhere
			for pb.Next() {
				if _, err := m.Allow(ctx, many[i&(len(many)-1)], benchPolicy); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
		cpuPerOp(b, start)
	})
}

// BenchmarkRedisAllow measures one decision through Redis: a network round
// trip to the server named by DOTDO_TEST_REDIS_URL.
func BenchmarkRedisAllow(b *testing.B) {
	ctx := context.Background()
	c := newRedisClient(b)
	many := benchKeys(1 << 12)

	b.Run("one-key", func(b *testing.B) {
		r := NewRedis(c, testPrefix(b, c))
		start := processCPUTime()
		for b.Loop() {
			if _, err := r.Allow(ctx, "key_1", benchPolicy); err != nil {
				b.Fatal(err)
			}
		}
		cpuPerOp(b, start)
	})
	b.Run("many-keys-parallel", func(b *testing.B) {
		r := NewRedis(c, testPrefix(b, c))
		start := processCPUTime()
		b.RunParallel(func(pb *testing.PB) {
			i := int(time.Now().UnixNano())
			for pb.Next() {
				if _, err := r.Allow(ctx, many[i&(len(many)-1)], benchPolicy); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
		cpuPerOp(b, start)
	})
}
