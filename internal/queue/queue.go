// Package queue is dotdo's queue service: Cloudflare Queues semantics
// (batches, retries, delays, dead-letter queues, HTTP pull consumers) on
// NATS JetStream, embedded in the process by default or an external NATS
// cluster.
//
// Each queue is one JetStream stream with work-queue retention holding its
// messages on <prefix>.q.<name>, and one durable consumer ("consumer") that
// push handlers and HTTP pulls share. Delayed messages wait in the stream
// <prefix>_DELAYED (subject <prefix>.d.<name>) with a not-before header; a
// delayer in every process holds each one back with NakWithDelay until it is
// due and then moves it to its queue, so a delay does not cost a delivery
// attempt of the queue's consumer. (JetStream's own message schedules need
// nats-server 2.12; this works on 2.9 and later.) Settings live in the KV
// bucket <prefix>_queues, so every process connected to the same NATS sees
// the same queues, paused or not.
package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dotdo/dotdo/internal/apierr"
)

// Limits, as Cloudflare Queues documents them.
const (
	MaxMessageBytes   = 128 << 10
	MaxBatchMessages  = 100
	MaxBatchBytes     = 256 << 10
	MaxDelay          = 12 * time.Hour
	MaxRetention      = 14 * 24 * time.Hour
	MinRetention      = time.Minute
	DefaultRetention  = 4 * 24 * time.Hour
	MaxVisibility     = 12 * time.Hour
	DefaultVisibility = 30 * time.Second
)

// Config says where the queues live.
type Config struct {
	// URL of an external NATS (nats://host:4222, several separated by
	// commas). Empty runs an embedded server.
	URL string
	// Dir is the embedded server's JetStream file store.
	Dir string
	// Listen is an optional host:port for the embedded server to accept
	// NATS clients on; empty means no TCP listener at all.
	Listen string
	// Replicas of each queue's stream on an external cluster (1-5, default 1).
	Replicas int
	// Prefix of the stream, subject and bucket names ("DOTDO"); tests use
	// a unique one on a shared NATS.
	Prefix string
	// AckWait is how long a delivered message stays leased without an ack
	// or a keep-alive before JetStream delivers it again (default 30 s).
	AckWait time.Duration
}

// Settings of a queue. In Go, a zero MaxBatchSize or Retention takes the
// default; a zero MaxRetries or MaxBatchTimeout means zero. Defaults(name)
// returns Cloudflare's defaults for every field.
type Settings struct {
	Name            string        `json:"name"`
	MaxBatchSize    int           `json:"max_batch_size"`
	MaxBatchTimeout time.Duration `json:"max_batch_timeout"`
	MaxRetries      int           `json:"max_retries"`
	RetryDelay      time.Duration `json:"retry_delay"`
	DeadLetterQueue string        `json:"dead_letter_queue,omitempty"`
	DeliveryDelay   time.Duration `json:"delivery_delay"`
	Retention       time.Duration `json:"retention"`
}

// Defaults returns Cloudflare's default settings for a queue named name.
func Defaults(name string) Settings {
	return Settings{Name: name, MaxBatchSize: 10, MaxBatchTimeout: 5 * time.Second, MaxRetries: 3, Retention: DefaultRetention}
}

var nameRE = regexp.MustCompile(`^[a-z0-9_-]{1,63}$`)

// ValidName checks a queue name.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return apierr.New(apierr.Invalid, "queue name %q: want 1-63 of a-z, 0-9, _ and -", name)
	}
	return nil
}

// IsSystem reports whether name is a system queue (leading _), closed to tenants.
func IsSystem(name string) bool { return len(name) > 0 && name[0] == '_' }

func (st *Settings) normalize() error {
	if err := ValidName(st.Name); err != nil {
		return err
	}
	if st.MaxBatchSize == 0 {
		st.MaxBatchSize = 10
	}
	if st.Retention == 0 {
		st.Retention = DefaultRetention
	}
	switch {
	case st.MaxBatchSize < 1 || st.MaxBatchSize > 100:
		return apierr.New(apierr.Invalid, "max_batch_size %d: want 1-100", st.MaxBatchSize)
	case st.MaxBatchTimeout < 0 || st.MaxBatchTimeout > 60*time.Second:
		return apierr.New(apierr.Invalid, "max_batch_timeout %s: want 0-60 s", st.MaxBatchTimeout)
	case st.MaxRetries < 0 || st.MaxRetries > 100:
		return apierr.New(apierr.Invalid, "max_retries %d: want 0-100", st.MaxRetries)
	case st.RetryDelay < 0 || st.RetryDelay > MaxDelay:
		return apierr.New(apierr.Invalid, "retry_delay %s: want 0-43200 s", st.RetryDelay)
	case st.DeliveryDelay < 0 || st.DeliveryDelay > MaxDelay:
		return apierr.New(apierr.Invalid, "delivery_delay %s: want 0-43200 s", st.DeliveryDelay)
	case st.Retention < MinRetention || st.Retention > MaxRetention:
		return apierr.New(apierr.Invalid, "retention %s: want 60 s to 14 days", st.Retention)
	case st.DeadLetterQueue == st.Name:
		return apierr.New(apierr.Invalid, "dead_letter_queue must differ from the queue")
	}
	if st.DeadLetterQueue != "" {
		if err := ValidName(st.DeadLetterQueue); err != nil {
			return apierr.New(apierr.Invalid, "dead_letter_queue: %s", apierr.From(err).Message)
		}
	}
	return nil
}

// Service is the queue engine of one process.
type Service struct {
	cfg  Config
	log  *slog.Logger
	srv  *server.Server // nil with an external NATS
	nc   *nats.Conn
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	ctx  context.Context // cancelled by Close
	stop context.CancelFunc

	mu       sync.RWMutex
	settings map[string]record // from the KV bucket, kept current by a watcher
	counters map[string]*counters
	leases   map[string]*lease // HTTP pull leases taken by this process
	metrics  *queueMetrics
	// onDeadLetter is the OnDeadLetter hook.
	onDeadLetter atomic.Pointer[func(DeadLetter)]

	wg sync.WaitGroup
}

// Open starts an embedded NATS with JetStream under cfg.Dir, or connects to
// cfg.URL, and loads the queues.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "DOTDO"
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		return nil, fmt.Errorf("queue replicas %d: want 1-5", cfg.Replicas)
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultVisibility
	}
	s := &Service{cfg: cfg, log: log, settings: map[string]record{}, counters: map[string]*counters{}, leases: map[string]*lease{}}
	var err error
	if cfg.URL != "" {
		s.nc, err = nats.Connect(cfg.URL, nats.Name("dotdo-queue"), nats.MaxReconnects(-1))
		if err != nil {
			return nil, fmt.Errorf("connect to NATS at %s: %w", cfg.URL, err)
		}
	} else {
		if err := s.startEmbedded(); err != nil {
			return nil, err
		}
	}
	s.js, err = jetstream.New(s.nc, jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		s.Close()
		return nil, err
	}
	kvcfg := jetstream.KeyValueConfig{Bucket: cfg.Prefix + "_queues", Description: "dotdo queue settings", Storage: jetstream.FileStorage, Replicas: cfg.Replicas, History: 1}
	s.kv, err = s.js.CreateOrUpdateKeyValue(ctx, kvcfg)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("open the queue settings bucket (is JetStream enabled on the NATS server?): %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.ctx, s.stop = wctx, cancel
	if err := s.watch(ctx, wctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.startDelayer(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.watchLeases(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Service) startEmbedded() error {
	if s.cfg.Dir == "" {
		return errors.New("queue: Config.Dir is required for the embedded NATS server")
	}
	if err := os.MkdirAll(s.cfg.Dir, 0o750); err != nil {
		return fmt.Errorf("create the NATS store directory: %w", err)
	}
	opts := &server.Options{
		ServerName: "dotdo",
		JetStream:  true,
		StoreDir:   s.cfg.Dir,
		DontListen: true,
		Port:       server.RANDOM_PORT,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 1 << 20,
	}
	if s.cfg.Listen != "" {
		host, port, err := net.SplitHostPort(s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("NATS listen address %q: want host:port", s.cfg.Listen)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return fmt.Errorf("NATS listen address %q: want host:port", s.cfg.Listen)
		}
		opts.DontListen, opts.Host, opts.Port = false, host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return errors.New("embedded NATS did not start within 30 s")
	}
	s.srv = srv
	s.nc, err = nats.Connect("", nats.InProcessServer(srv), nats.Name("dotdo-queue"))
	if err != nil {
		srv.Shutdown()
		return fmt.Errorf("connect to the embedded NATS: %w", err)
	}
	return nil
}

// Close stops consumers, closes the connection and, when embedded, the server.
func (s *Service) Close() error {
	if s.stop != nil {
		s.stop()
	}
	s.wg.Wait()
	if s.nc != nil {
		s.nc.Drain()
		for i := 0; i < 100 && !s.nc.IsClosed(); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		s.nc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	return nil
}

// watch loads every queue's settings and keeps them current.
func (s *Service) watch(ctx, wctx context.Context) error {
	w, err := s.kv.WatchAll(wctx)
	if err != nil {
		return fmt.Errorf("watch queue settings: %w", err)
	}
	ready := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer w.Stop()
		once := sync.OnceFunc(func() { close(ready) })
		for {
			select {
			case <-wctx.Done():
				once()
				return
			case e, ok := <-w.Updates():
				if !ok {
					once()
					return
				}
				if e == nil {
					once()
					continue
				}
				s.mu.Lock()
				if e.Operation() == jetstream.KeyValuePut {
					var rec record
					if json.Unmarshal(e.Value(), &rec) == nil {
						s.settings[e.Key()] = rec
					}
				} else {
					delete(s.settings, e.Key())
				}
				s.mu.Unlock()
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) stream(name string) string         { return s.cfg.Prefix + "_Q_" + name }
func (s *Service) subject(name string) string        { return s.cfg.Prefix + ".q." + name }
func (s *Service) delayedStream() string             { return s.cfg.Prefix + "_DELAYED" }
func (s *Service) delayedSubject(name string) string { return s.cfg.Prefix + ".d." + name }

// record is what the KV bucket keeps per queue.
type record struct {
	Settings
	Paused bool `json:"paused,omitempty"`
}

const consumerName = "consumer"

// EnsureQueue creates the queue or updates its settings; idempotent.
func (s *Service) EnsureQueue(ctx context.Context, st Settings) error {
	if err := st.normalize(); err != nil {
		return err
	}
	scfg := jetstream.StreamConfig{
		Name:        s.stream(st.Name),
		Description: "dotdo queue " + st.Name,
		Subjects:    []string{s.subject(st.Name)},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
		MaxAge:      st.Retention,
		Discard:     jetstream.DiscardOld,
		Duplicates:  2 * time.Minute,
	}
	if _, err := s.js.CreateOrUpdateStream(ctx, scfg); err != nil {
		return fmt.Errorf("create stream for queue %s: %w", st.Name, err)
	}
	ccfg := jetstream.ConsumerConfig{
		Durable:       consumerName,
		Description:   "dotdo queue consumers (push handlers and HTTP pulls)",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxDeliver:    -1,
		FilterSubject: s.subject(st.Name),
		MaxAckPending: 20000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if _, err := s.js.CreateOrUpdateConsumer(ctx, s.stream(st.Name), ccfg); err != nil {
		return fmt.Errorf("create consumer for queue %s: %w", st.Name, err)
	}
	return s.update(ctx, st.Name, func(rec *record, found bool) error {
		rec.Settings = st
		return nil
	})
}

// update changes a queue's record in the bucket with optimistic concurrency.
func (s *Service) update(ctx context.Context, name string, f func(rec *record, found bool) error) error {
	for range 10 {
		var rec record
		var rev uint64
		e, err := s.kv.Get(ctx, name)
		found := err == nil
		if found {
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return fmt.Errorf("read queue %s: %w", name, err)
			}
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("read queue %s: %w", name, err)
		}
		if err := f(&rec, found); err != nil {
			return err
		}
		b, _ := json.Marshal(rec)
		if found {
			_, err = s.kv.Update(ctx, name, b, rev)
		} else {
			_, err = s.kv.Create(ctx, name, b)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || apiCode(err) == jetstream.JSErrCodeStreamWrongLastSequence {
			continue
		}
		if err != nil {
			return fmt.Errorf("save queue %s: %w", name, err)
		}
		s.mu.Lock()
		s.settings[name] = rec
		s.mu.Unlock()
		return nil
	}
	return apierr.New(apierr.Conflict, "queue %s is being changed concurrently; try again", name)
}

func apiCode(err error) jetstream.ErrorCode {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode
	}
	return 0
}

// Queue returns a queue's settings; NotFound if it does not exist.
func (s *Service) Queue(ctx context.Context, name string) (Settings, error) {
	rec, err := s.record(ctx, name)
	return rec.Settings, err
}

func (s *Service) record(ctx context.Context, name string) (record, error) {
	if err := ValidName(name); err != nil {
		return record{}, err
	}
	s.mu.RLock()
	rec, ok := s.settings[name]
	s.mu.RUnlock()
	if ok {
		return rec, nil
	}
	// Another process may have just created it: ask the bucket.
	e, err := s.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return record{}, apierr.New(apierr.NotFound, "queue %s not found", name)
	}
	if err != nil {
		return record{}, fmt.Errorf("read queue %s: %w", name, err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return record{}, fmt.Errorf("read queue %s: %w", name, err)
	}
	return rec, nil
}

// Queues lists every queue's settings, by name.
func (s *Service) Queues(ctx context.Context) ([]Settings, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []Settings
	for k := range keys.Keys() {
		if st, err := s.Queue(ctx, k); err == nil {
			out = append(out, st)
		}
	}
	sortSettings(out)
	return out, nil
}

// DeleteQueue removes a queue and every message in it.
func (s *Service) DeleteQueue(ctx context.Context, name string) error {
	if _, err := s.Queue(ctx, name); err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, name); err != nil {
		return fmt.Errorf("delete queue %s: %w", name, err)
	}
	if err := s.js.DeleteStream(ctx, s.stream(name)); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete queue %s: %w", name, err)
	}
	s.purgeDelayed(ctx, name)
	s.mu.Lock()
	delete(s.settings, name)
	s.mu.Unlock()
	return nil
}

// Outgoing is a message to send.
type Outgoing struct {
	Body        []byte
	ContentType string        // "json" (default), "text" or "bytes"
	Delay       time.Duration // 0-12h; 0 takes the queue's delivery_delay
}

// Message headers.
const (
	hdrID        = "Dotdo-Id"
	hdrTimestamp = "Dotdo-Ts"
	hdrType      = "Dotdo-Type"
	hdrError     = "Dotdo-Error"
	hdrFrom      = "Dotdo-From-Queue"
	hdrAttempts  = "Dotdo-Attempts"
	hdrNotBefore = "Dotdo-Not-Before"
)

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CheckBatch validates msgs against Cloudflare's limits without sending.
func CheckBatch(msgs []Outgoing) error { return checkBatch(msgs, true) }

// checkBatch checks msgs; jsonChecked skips re-validating JSON bodies that
// a JSON decoder has already parsed (the REST routes).
func checkBatch(msgs []Outgoing, validateJSON bool) error {
	if len(msgs) == 0 {
		return apierr.New(apierr.Invalid, "no messages to send")
	}
	if len(msgs) > MaxBatchMessages {
		return apierr.New(apierr.Invalid, "%d messages in a batch: at most %d", len(msgs), MaxBatchMessages)
	}
	total := 0
	for i, m := range msgs {
		if len(m.Body) > MaxMessageBytes {
			return apierr.AtIndex(apierr.New(apierr.TooLarge, "message of %d bytes: at most %d (128 KB)", len(m.Body), MaxMessageBytes), i)
		}
		total += len(m.Body)
		switch m.ContentType {
		case "", "json":
			if validateJSON && !json.Valid(m.Body) {
				return apierr.AtIndex(apierr.New(apierr.Invalid, "body is not valid JSON (content_type json)"), i)
			}
		case "text", "bytes":
		default:
			return apierr.AtIndex(apierr.New(apierr.Invalid, "content_type %q: use json, text or bytes", m.ContentType), i)
		}
		if m.Delay < 0 || m.Delay > MaxDelay {
			return apierr.AtIndex(apierr.New(apierr.Invalid, "delay %s: want 0-43200 seconds", m.Delay), i)
		}
	}
	if total > MaxBatchBytes {
		return apierr.New(apierr.TooLarge, "batch of %d bytes: at most %d (256 KB)", total, MaxBatchBytes)
	}
	return nil
}

// Send enqueues msgs as one batch and returns their ids once JetStream has
// stored every one (PubAck). Nothing is sent from a batch that fails the checks.
func (s *Service) Send(ctx context.Context, queue string, msgs ...Outgoing) ([]string, error) {
	return s.send(ctx, queue, msgs, true)
}

func (s *Service) send(ctx context.Context, queue string, msgs []Outgoing, validateJSON bool) ([]string, error) {
	st, err := s.Queue(ctx, queue)
	if err != nil {
		return nil, err
	}
	if err := checkBatch(msgs, validateJSON); err != nil {
		return nil, err
	}
	ids := make([]string, len(msgs))
	now := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	var failed error
	for i, m := range msgs {
		ids[i] = newID()
		ct := m.ContentType
		if ct == "" {
			ct = "json"
		}
		nm := s.message(queue, ids[i], now, ct, m.Body, m.Delay, st.DeliveryDelay, now)
		f, err := s.js.PublishMsgAsync(nm)
		if err != nil {
			failed = err
			break
		}
		futures = append(futures, f)
	}
	// Wait for every PubAck, even after a failure or a cancelled ctx, so
	// that a failed batch can be taken back.
	var stored []*jetstream.PubAck
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			stored = append(stored, ack)
		case err := <-f.Err():
			failed = err
		}
	}
	if failed == nil && ctx.Err() != nil {
		failed = ctx.Err()
	}
	if failed != nil {
		s.takeBack(stored)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, s.sendError(queue, failed)
	}
	s.count(queue).sent.Add(int64(len(msgs)))
	return ids, nil
}

// message builds the JetStream message for one queue message.
func (s *Service) message(queue, id string, ts time.Time, ct string, body []byte, delay, defDelay time.Duration, now time.Time) *nats.Msg {
	if delay == 0 {
		delay = defDelay
	}
	nm := &nats.Msg{Subject: s.subject(queue), Data: body, Header: nats.Header{}}
	nm.Header[hdrID] = []string{id}
	nm.Header[hdrTimestamp] = []string{strconv.FormatInt(ts.UnixMilli(), 10)}
	nm.Header[hdrType] = []string{ct}
	if delay > 0 {
		// Held in the delayed stream until due; see the delayer. The
		// message id deduplicates the delayer's move into the queue.
		nm.Header[jetstream.MsgIDHeader] = []string{id}
		nm.Subject = s.delayedSubject(queue)
		nm.Header[hdrNotBefore] = []string{strconv.FormatInt((now.Add(delay).UnixNano()+999_999)/1e6, 10)}
	}
	return nm
}

// takeBack deletes the messages of a batch that failed part-way, so that a
// failed send leaves nothing behind (best effort: a consumer may have taken
// one in the meantime).
func (s *Service) takeBack(stored []*jetstream.PubAck) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	streams := map[string]jetstream.Stream{}
	for _, a := range stored {
		str, ok := streams[a.Stream]
		if !ok {
			var err error
			if str, err = s.js.Stream(ctx, a.Stream); err != nil {
				s.log.Warn("queue: could not take back the messages of a failed batch", "stream", a.Stream, "err", err)
				continue
			}
			streams[a.Stream] = str
		}
		if err := str.DeleteMsg(ctx, a.Sequence); err != nil {
			s.log.Warn("queue: could not take back a message of a failed batch", "stream", a.Stream, "seq", a.Sequence, "err", err)
		}
	}
}

func (s *Service) sendError(queue string, err error) error {
	s.log.Error("queue send failed", "queue", queue, "err", err)
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		return apierr.New(apierr.Unavailable, "queue %s is not available", queue)
	}
	return apierr.New(apierr.Unavailable, "queue %s: message not stored", queue)
}
