package thingsdb

import (
	"container/heap"
	"math"
	"runtime"
	"sync"
)

// vecIndex is the in-process vector index of the db service: per
// namespace, every live thing's embedding, normalised to unit length, in
// one flat float32 slice. A query is an exact scan (cosine = dot product of
// unit vectors) split over the CPUs, keeping the top k in a heap: exact
// results, so recall is 1, and at 100k x 384 it meets the latency target
// (docs/benchmarks.md). It is loaded from the database at start and kept
// current on every write (and, on PostgreSQL, on every write of another
// replica through LISTEN/NOTIFY).
type vecIndex struct {
	mu     sync.RWMutex
	spaces map[string]*vecSpace
}

type vecSpace struct {
	dims  int
	ids   []string // "" marks a free slot
	types []string
	vecs  []float32
	slot  map[string]int
	free  []int
}

func newVecIndex() *vecIndex { return &vecIndex{spaces: map[string]*vecSpace{}} }

// normalize returns v scaled to unit length, or nil for a zero vector.
func normalize(v []float32) []float32 {
	var sum float64
	for _, f := range v {
		sum += float64(f) * float64(f)
	}
	if sum == 0 || math.IsNaN(sum) || math.IsInf(sum, 0) {
		return nil
	}
	inv := float32(1 / math.Sqrt(sum))
	out := make([]float32, len(v))
	for i, f := range v {
		out[i] = f * inv
	}
	return out
}

// put sets the embedding of ns/id; an empty or zero vector removes it.
func (x *vecIndex) put(ns, id, typ string, v []float32) {
	u := normalize(v)
	x.mu.Lock()
	defer x.mu.Unlock()
	sp := x.spaces[ns]
	if u == nil {
		if sp != nil {
			sp.remove(id)
		}
		return
	}
	if sp == nil || sp.dims != len(u) {
		// The database fixes a namespace's dimension, so a mismatch
		// means the namespace was emptied and started again.
		sp = &vecSpace{dims: len(u), slot: map[string]int{}}
		x.spaces[ns] = sp
	}
	if i, ok := sp.slot[id]; ok {
		copy(sp.vecs[i*sp.dims:], u)
		sp.types[i] = typ
		return
	}
	var i int
	if n := len(sp.free); n > 0 {
		i = sp.free[n-1]
		sp.free = sp.free[:n-1]
		sp.ids[i], sp.types[i] = id, typ
		copy(sp.vecs[i*sp.dims:], u)
	} else {
		i = len(sp.ids)
		sp.ids = append(sp.ids, id)
		sp.types = append(sp.types, typ)
		sp.vecs = append(sp.vecs, u...)
	}
	sp.slot[id] = i
}

func (x *vecIndex) remove(ns, id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if sp := x.spaces[ns]; sp != nil {
		sp.remove(id)
	}
}

func (sp *vecSpace) remove(id string) {
	i, ok := sp.slot[id]
	if !ok {
		return
	}
	delete(sp.slot, id)
	sp.ids[i], sp.types[i] = "", ""
	clear(sp.vecs[i*sp.dims : (i+1)*sp.dims])
	sp.free = append(sp.free, i)
}

// reset forgets everything (before a reload).
func (x *vecIndex) reset() {
	x.mu.Lock()
	x.spaces = map[string]*vecSpace{}
	x.mu.Unlock()
}

// scored is one search result: an id and its score (higher is better).
type scored struct {
	id    string
	score float64
}

// after reports whether a ranks after b: lower score, then greater id.
func (a scored) after(b scored) bool {
	if a.score != b.score {
		return a.score < b.score
	}
	return a.id > b.id
}

// minHeap keeps the best k results with the worst on top.
type minHeap []scored

func (h minHeap) Len() int           { return len(h) }
func (h minHeap) Less(i, j int) bool { return h[i].after(h[j]) }
func (h minHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *minHeap) Push(x any)        { *h = append(*h, x.(scored)) }
func (h *minHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (h *minHeap) offer(s scored, k int) {
	if len(*h) < k {
		heap.Push(h, s)
		return
	}
	if (*h)[0].after(s) {
		(*h)[0] = s
		heap.Fix(h, 0)
	}
}

// sorted empties the heap into best-first order.
func (h *minHeap) sorted() []scored {
	out := make([]scored, len(*h))
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = heap.Pop(h).(scored)
	}
	return out
}

// errDims is returned by search for a query of the wrong dimension.
type errDims struct{ want, got int }

// search returns the k nearest things of ns to q (cosine similarity),
// best first, of type typ when it is not empty, strictly after the cursor
// position after when it is not nil.
func (x *vecIndex) search(ns string, q []float32, typ string, k int, after *scored) ([]scored, *errDims) {
	u := normalize(q)
	x.mu.RLock()
	defer x.mu.RUnlock()
	sp := x.spaces[ns]
	if sp == nil || k <= 0 {
		return nil, nil
	}
	if len(q) != sp.dims {
		return nil, &errDims{want: sp.dims, got: len(q)}
	}
	if u == nil {
		return nil, nil
	}
	n := len(sp.ids)
	parts := runtime.GOMAXPROCS(0)
	if n < 4096 {
		parts = 1
	}
	heaps := make([]minHeap, parts)
	var wg sync.WaitGroup
	chunk := (n + parts - 1) / parts
	for p := 0; p < parts; p++ {
		lo, hi := p*chunk, min((p+1)*chunk, n)
		wg.Add(1)
		go func(p, lo, hi int) {
			defer wg.Done()
			h := make(minHeap, 0, k+1)
			d := sp.dims
			for i := lo; i < hi; i++ {
				id := sp.ids[i]
				if id == "" || typ != "" && sp.types[i] != typ {
					continue
				}
				s := scored{id: id, score: float64(dot(u, sp.vecs[i*d:(i+1)*d]))}
				if after != nil && !s.after(*after) {
					continue
				}
				if len(h) == k && !h[0].after(s) {
					continue
				}
				h.offer(s, k)
			}
			heaps[p] = h
		}(p, lo, hi)
	}
	wg.Wait()
	all := heaps[0]
	for _, h := range heaps[1:] {
		for _, s := range h {
			all.offer(s, k)
		}
	}
	return all.sorted(), nil
}

// dot is the dot product of two vectors of the same length, unrolled
// eight ways so the CPU runs independent multiply-adds in parallel.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		aa, bb := a[i:i+8:i+8], b[i:i+8:i+8]
		s0 += aa[0] * bb[0]
		s1 += aa[1] * bb[1]
		s2 += aa[2] * bb[2]
		s3 += aa[3] * bb[3]
		s4 += aa[4] * bb[4]
		s5 += aa[5] * bb[5]
		s6 += aa[6] * bb[6]
		s7 += aa[7] * bb[7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3) + (s4 + s5) + (s6 + s7)
}

// count returns how many embeddings ns holds.
func (x *vecIndex) count(ns string) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if sp := x.spaces[ns]; sp != nil {
		return len(sp.slot)
	}
	return 0
}

// dims returns the dimension of ns's vectors, 0 when it has none.
func (x *vecIndex) dims(ns string) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if sp := x.spaces[ns]; sp != nil && len(sp.slot) > 0 {
		return sp.dims
	}
	return 0
}
