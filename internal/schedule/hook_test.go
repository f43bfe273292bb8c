package schedule

import (
	"net/http"
	"testing"
	"time"
)

// TestOnRunFailed: the hook is told of a run that ends failed once its
// retries are spent (webhooks emits task.failed from it).
func TestOnRunFailed(t *testing.T) {
	db := openDB(t, "sqlite")
	clk := NewFakeClock(t0())
	h := newHook(t, func(c call, w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) })
	r := startReplica(t, db, clk, "r0", nil)
	got := make(chan RunFailure, 4)
	r.Service.OnRunFailed(func(f RunFailure) { got <- f })
	task := httpTask("acme", "doomed", "@hourly", h.URL)
	task.Retries = i32(0)
	putTask(t, r.Service, task)
	clk.Advance(time.Hour)
	select {
	case f := <-got:
		if f.Ns != "acme" || f.Task != "doomed" || f.RunID == "" || f.Status != statusFailed || f.Error == "" {
			t.Fatalf("run failure %+v", f)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the hook was not called")
	}
}
