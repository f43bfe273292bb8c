package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// hostRoute maps a custom host name to a script; one thing per host, so a
// host reaches one script only (create-only writes).
type hostRoute struct {
	Host      string `json:"host"`
	Namespace string `json:"namespace"`
	Script    string `json:"script"`
}

type nsScript struct{ ns, script string }

// HostIndex maps host names to scripts: the host pattern, and the custom
// host names kept in memory from the store. The dispatch service has one;
// a gateway whose dispatch service runs in another process builds its own
// over its db binding, so that matching a host needs no call.
type HostIndex struct {
	pattern []string
	st      *store
	ttl     time.Duration
	log     *slog.Logger

	hostsMu sync.RWMutex
	hosts   map[string]nsScript // custom host names
}

// NewHostIndex returns an index over the db binding with the host pattern
// (empty for none); Start loads it.
func NewHostIndex(db thingsdb.API, pattern string, ttl time.Duration, logger *slog.Logger) (*HostIndex, error) {
	labels, err := parsePattern(pattern)
	if err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = 2 * time.Second
	}
	return &HostIndex{pattern: labels, st: &store{db: db}, ttl: ttl, log: logger, hosts: map[string]nsScript{}}, nil
}

// Start loads the custom host names and rereads them every TTL until ctx
// ends, so that routes made through another replica arrive.
func (s *HostIndex) Start(ctx context.Context) error {
	if err := s.loadHosts(ctx); err != nil {
		return fmt.Errorf("load custom host routes: %w", err)
	}
	go s.refreshHosts(ctx)
	return nil
}

// setHosts updates the in-memory host map after a local change.
func (s *HostIndex) setHosts(ns, name string, add, drop []string) {
	s.hostsMu.Lock()
	defer s.hostsMu.Unlock()
	for _, h := range drop {
		if s.hosts[h] == (nsScript{ns, name}) {
			delete(s.hosts, h)
		}
	}
	for _, h := range add {
		s.hosts[h] = nsScript{ns, name}
	}
}

// takenHost returns the first host of hosts another script holds.
func (s *HostIndex) takenHost(ctx context.Context, hosts []string) string {
	for _, h := range hosts {
		if _, err := s.st.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: hostID(h)})); err == nil {
			return h
		}
	}
	return ""
}

// loadHosts reads every host route into memory.
func (s *HostIndex) loadHosts(ctx context.Context) error {
	items, err := s.st.listAll(ctx, typeHost, "")
	if err != nil {
		return err
	}
	m := make(map[string]nsScript, len(items))
	for _, t := range items {
		var r hostRoute
		if json.Unmarshal(t.Data, &r) == nil {
			m[r.Host] = nsScript{r.Namespace, r.Script}
		}
	}
	s.hostsMu.Lock()
	s.hosts = m
	s.hostsMu.Unlock()
	return nil
}

// refreshHosts rereads the host routes every TTL until ctx ends, so that
// routes made through another replica arrive.
func (s *HostIndex) refreshHosts(ctx context.Context) {
	t := time.NewTicker(s.ttl)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.loadHosts(ctx); err != nil && ctx.Err() == nil && !apierr.Is(err, apierr.Unavailable) {
				s.log.WarnContext(ctx, "reload custom host routes", "err", err)
			}
		}
	}
}

// customHost returns the script a custom host name reaches.
func (s *HostIndex) customHost(host string) (nsScript, bool) {
	s.hostsMu.RLock()
	defer s.hostsMu.RUnlock()
	r, ok := s.hosts[host]
	return r, ok
}
