package thingsdb

import (
	"fmt"
	"math/rand"
	"testing"
)

// TestVecIndexSlots checks that removed slots are reused and never found,
// and that a parallel scan (over 4096 vectors) equals a sequential one.
func TestVecIndexSlots(t *testing.T) {
	x := newVecIndex()
	rng := rand.New(rand.NewSource(3))
	vec := func() []float32 {
		v := make([]float32, 8)
		for i := range v {
			v[i] = rng.Float32() - 0.5
		}
		return v
	}
	for i := 0; i < 5000; i++ {
		x.put("ns", fmt.Sprintf("id%d", i), "T", vec())
	}
	for i := 0; i < 5000; i += 2 {
		x.remove("ns", fmt.Sprintf("id%d", i))
	}
	if n := x.count("ns"); n != 2500 {
		t.Fatalf("count = %d", n)
	}
	for i := 0; i < 100; i++ {
		x.put("ns", fmt.Sprintf("new%d", i), "U", vec())
	}
	if sp := x.spaces["ns"]; len(sp.ids) != 5000 {
		t.Fatalf("slots grew to %d; removed ones were not reused", len(sp.ids))
	}
	q := vec()
	all, _ := x.search("ns", q, "", 3000, nil)
	if len(all) != 2600 {
		t.Fatalf("found %d; want 2600", len(all))
	}
	for i, s := range all {
		var n int
		fmt.Sscanf(s.id, "id%d", &n)
		if s.id[:2] == "id" && n%2 == 0 {
			t.Fatalf("removed %s found", s.id)
		}
		if i > 0 && all[i-1].after(s) {
			t.Fatal("not sorted")
		}
	}
	typed, _ := x.search("ns", q, "U", 1000, nil)
	if len(typed) != 100 {
		t.Fatalf("type filter found %d", len(typed))
	}
	// Paging with after gives the continuation of the full order.
	page, _ := x.search("ns", q, "", 10, &all[9])
	for i := range page {
		if page[i] != all[10+i] {
			t.Fatalf("page after 10 = %v; want %v", page[i], all[10+i])
		}
	}
	if _, err := x.search("ns", []float32{1, 2}, "", 10, nil); err == nil || err.want != 8 {
		t.Fatalf("dimension mismatch = %v", err)
	}
	// A zero vector removes.
	x.put("ns", "id1", "T", make([]float32, 8))
	if _, ok := x.spaces["ns"].slot["id1"]; ok {
		t.Fatal("zero vector kept")
	}
}

// BenchmarkVectorScan is the exact scan of 100k x 384 for k = 10.
func BenchmarkVectorScan(b *testing.B) {
	x := newVecIndex()
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 100000; i++ {
		v := make([]float32, 384)
		for j := range v {
			v[j] = float32(rng.NormFloat64())
		}
		x.put("ns", fmt.Sprintf("t%06d", i), "T", v)
	}
	q := make([]float32, 384)
	for j := range q {
		q[j] = float32(rng.NormFloat64())
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x.search("ns", q, "", 10, nil)
	}
}
