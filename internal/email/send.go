package email

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/queue"
)

// Limits of one email.
const (
	MaxTo             = 50
	MaxRecipients     = 150 // to + cc + bcc
	MaxAttachmentSize = 10 << 20
	MaxBatch          = 100
	MaxTags           = 20
	MaxHeaders        = 50
	MaxSubject        = 998
	MaxBody           = 2 << 20 // html and text each
	MaxSchedule       = 30 * 24 * time.Hour
	idempotencyTTL    = 24 * time.Hour
)

// DefaultNamespace is the tenant namespace of emails that name none.
const DefaultNamespace = "default"

// Input is one email as a caller composes it (POST /v1/emails).
type Input struct {
	Ns          string            `json:"-"`
	From        string            `json:"from"`
	To          Addresses         `json:"to"`
	Cc          Addresses         `json:"cc,omitempty"`
	Bcc         Addresses         `json:"bcc,omitempty"`
	ReplyTo     Addresses         `json:"replyTo,omitempty"`
	Subject     string            `json:"subject,omitempty"`
	HTML        string            `json:"html,omitempty"`
	Text        string            `json:"text,omitempty"`
	Template    string            `json:"template,omitempty"`
	Data        map[string]any    `json:"data,omitempty"`
	Tags        []Tag             `json:"tags,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Attachments []InAttachment    `json:"attachments,omitempty"`
	ScheduledAt string            `json:"scheduledAt,omitempty"`
	// Resend's own spellings, accepted so that its clients work unchanged.
	ReplyToSnake     Addresses `json:"reply_to,omitempty"`
	ScheduledAtSnake string    `json:"scheduled_at,omitempty"`
}

// normalize folds Resend's spellings into the canonical fields.
func (in *Input) normalize() error {
	if len(in.ReplyToSnake) > 0 {
		if len(in.ReplyTo) > 0 {
			return invalid("give replyTo or reply_to, not both")
		}
		in.ReplyTo, in.ReplyToSnake = in.ReplyToSnake, nil
	}
	if in.ScheduledAtSnake != "" {
		if in.ScheduledAt != "" {
			return invalid("give scheduledAt or scheduled_at, not both")
		}
		in.ScheduledAt, in.ScheduledAtSnake = in.ScheduledAtSnake, ""
	}
	for i := range in.Attachments {
		a := &in.Attachments[i]
		if a.ContentTypeSnake != "" && a.ContentType == "" {
			a.ContentType = a.ContentTypeSnake
		}
		if a.ContentIDSnake != "" && a.ContentID == "" {
			a.ContentID = a.ContentIDSnake
		}
		a.ContentTypeSnake, a.ContentIDSnake = "", ""
	}
	return nil
}

// InAttachment is an attachment as a caller sends it: content in base64.
type InAttachment struct {
	Filename    string `json:"filename"`
	Content     string `json:"content"`
	ContentType string `json:"contentType,omitempty"`
	ContentID   string `json:"contentId,omitempty"`
	// Resend's spellings.
	ContentTypeSnake string `json:"content_type,omitempty"`
	ContentIDSnake   string `json:"content_id,omitempty"`
}

// Addresses is a list of mailboxes that also reads from a single string,
// as Resend's API allows.
type Addresses []string

// UnmarshalJSON accepts "a@x" or ["a@x", "B <b@x>"].
func (a *Addresses) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Addresses{one}
		if one == "" {
			*a = nil
		}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want an address or an array of addresses")
	}
	*a = many
	return nil
}

// Options are how a send was asked for.
type Options struct {
	// IdempotencyKey (1-256 characters) makes a retried request return
	// the first one's result for 24 hours.
	IdempotencyKey string
	// Test sends to the outbox whatever the configured provider: the
	// caller is an sk_test_ key, or asked for it.
	Test bool
	// Strict makes a batch all or nothing; otherwise each email is
	// accepted or refused on its own.
	Strict bool
}

// Result is the outcome of one email of a send.
type Result struct {
	ID     string `json:"id,omitempty"`
	Status string `json:"status,omitempty"`
	// Err is set when the email was refused (or suppressed).
	Err *apierr.Error `json:"-"`
}

// prepared is a validated email ready to store.
type prepared struct {
	id  string
	rec *record
	pl  *payload
}

func parseAddress(s string) (*mail.Address, error) {
	a, err := mail.ParseAddress(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	return a, nil
}

func invalid(format string, args ...any) *apierr.Error {
	return apierr.New(apierr.Unprocessable, format, args...)
}

// checkAddresses validates a list of mailboxes, returning them trimmed
// and their lower-cased addresses.
func checkAddresses(field string, in []string) ([]string, []string, error) {
	var out, addrs []string
	for _, s := range in {
		s = strings.TrimSpace(s)
		if strings.ContainsAny(s, "\r\n") {
			return nil, nil, invalid("%s: %q is not a valid email address", field, s)
		}
		a, err := parseAddress(s)
		if err != nil {
			return nil, nil, invalid("%s: %q is not a valid email address", field, s)
		}
		out = append(out, s)
		addrs = append(addrs, strings.ToLower(a.Address))
	}
	return out, addrs, nil
}

// reservedHeaders are set by the service and cannot be given.
var reservedHeaders = []string{"from", "to", "cc", "bcc", "subject", "reply-to", "content-type", "content-transfer-encoding", "mime-version", "date", "message-id", "sender", "return-path"}

func validTagPart(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// prepare validates in, renders its template and checks the suppression
// list. A suppressed email comes back with status suppressed and Err set.
func (s *Service) prepare(ctx context.Context, in *Input, test bool, now time.Time) (*prepared, error) {
	if err := in.normalize(); err != nil {
		return nil, err
	}
	ns := in.Ns
	if ns == "" {
		ns = DefaultNamespace
	}
	from := in.From
	if strings.TrimSpace(from) == "" {
		from = s.cfg.From
	}
	if strings.TrimSpace(from) == "" {
		return nil, invalid("from is required (or start the service with a default sender, --email-from)")
	}
	froms, _, err := checkAddresses("from", []string{from})
	if err != nil {
		return nil, err
	}
	if len(in.To) == 0 {
		return nil, invalid("to is required: at least one recipient")
	}
	if len(in.To) > MaxTo {
		return nil, invalid("to has %d recipients; at most %d", len(in.To), MaxTo)
	}
	if n := len(in.To) + len(in.Cc) + len(in.Bcc); n > MaxRecipients {
		return nil, invalid("%d recipients in to, cc and bcc; at most %d", n, MaxRecipients)
	}
	r := &record{Ns: ns, From: froms[0], CreatedAt: ts(now), Test: test, Status: StatusQueued}
	var rcpt []string
	for _, f := range []struct {
		name string
		in   []string
		out  *[]string
	}{{"to", in.To, &r.To}, {"cc", in.Cc, &r.Cc}, {"bcc", in.Bcc, &r.Bcc}, {"replyTo", in.ReplyTo, &r.ReplyTo}} {
		list, addrs, err := checkAddresses(f.name, f.in)
		if err != nil {
			return nil, err
		}
		*f.out = list
		if f.name != "replyTo" {
			rcpt = append(rcpt, addrs...)
		}
	}
	slices.Sort(rcpt)
	r.Rcpt = slices.Compact(rcpt)
	pl := &payload{}
	if in.Template != "" {
		if in.HTML != "" || in.Text != "" {
			return nil, invalid("give either template (with data) or html/text, not both")
		}
		out, err := s.tpl.Render(in.Template, in.Data)
		if err != nil {
			return nil, err
		}
		r.Template = in.Template
		r.Subject = out.Subject
		if in.Subject != "" {
			r.Subject = in.Subject
		}
		pl.HTML, pl.Text = out.HTML, out.Text
	} else {
		if in.Data != nil {
			return nil, invalid("data is for templates: give template too")
		}
		if in.HTML == "" && in.Text == "" {
			return nil, invalid("html or text is required (or a template)")
		}
		if strings.TrimSpace(in.Subject) == "" {
			return nil, invalid("subject is required")
		}
		r.Subject = in.Subject
		pl.HTML, pl.Text = in.HTML, in.Text
	}
	if len(r.Subject) > MaxSubject || strings.ContainsAny(r.Subject, "\r\n") || !utf8.ValidString(r.Subject) {
		return nil, invalid("subject must be one line of UTF-8 of at most %d bytes", MaxSubject)
	}
	if len(pl.HTML) > MaxBody || len(pl.Text) > MaxBody {
		return nil, apierr.New(apierr.TooLarge, "html and text are each limited to %d bytes", MaxBody)
	}
	if len(in.Tags) > MaxTags {
		return nil, invalid("%d tags; at most %d", len(in.Tags), MaxTags)
	}
	for _, t := range in.Tags {
		if !validTagPart(t.Name) || !validTagPart(t.Value) {
			return nil, invalid("tag %q=%q: names and values are 1-256 ASCII letters, digits, _ and -", t.Name, t.Value)
		}
		r.Tags = append(r.Tags, t)
		r.TagKeys = append(r.TagKeys, t.Name, t.Name+"="+t.Value)
	}
	if len(in.Headers) > MaxHeaders {
		return nil, invalid("%d headers; at most %d", len(in.Headers), MaxHeaders)
	}
	for k, v := range in.Headers {
		if k == "" || len(k) > 76 || strings.IndexFunc(k, func(r rune) bool { return r <= ' ' || r > '~' || r == ':' }) >= 0 {
			return nil, invalid("header name %q is not a valid field name", k)
		}
		if slices.Contains(reservedHeaders, strings.ToLower(k)) {
			return nil, invalid("header %s is set from the email's fields; use them instead", k)
		}
		if strings.ContainsAny(v, "\r\n") || len(v) > 998 {
			return nil, invalid("header %s: the value must be one line of at most 998 bytes", k)
		}
	}
	pl.Headers = in.Headers
	total := 0
	for i, a := range in.Attachments {
		if a.Filename == "" || len(a.Filename) > 255 || strings.ContainsAny(a.Filename, "/\\\r\n\"") {
			return nil, invalid("attachments[%d]: filename is required, without / \\ \" or line breaks", i)
		}
		b, err := base64.StdEncoding.DecodeString(a.Content)
		if err != nil {
			return nil, invalid("attachments[%d] (%s): content must be base64", i, a.Filename)
		}
		if len(b) == 0 {
			return nil, invalid("attachments[%d] (%s): content is empty", i, a.Filename)
		}
		total += len(b)
		if total > MaxAttachmentSize {
			return nil, apierr.New(apierr.TooLarge, "attachments total more than %d bytes (10 MB)", MaxAttachmentSize)
		}
		if strings.ContainsAny(a.ContentType+a.ContentID, "\r\n\"") || len(a.ContentType) > 255 || len(a.ContentID) > 255 {
			return nil, invalid("attachments[%d] (%s): bad contentType or contentId", i, a.Filename)
		}
		pl.Attachments = append(pl.Attachments, Attachment{Filename: a.Filename, Content: b, ContentType: a.ContentType, ContentID: a.ContentID})
	}
	if in.ScheduledAt != "" {
		at, err := time.Parse(time.RFC3339, in.ScheduledAt)
		if err != nil {
			return nil, invalid("scheduledAt %q: want an RFC 3339 time such as 2030-01-02T15:04:05Z", in.ScheduledAt)
		}
		if at.Sub(now) > MaxSchedule {
			return nil, invalid("scheduledAt is more than 30 days ahead")
		}
		if at.After(now) {
			r.ScheduledAt = ts(at)
			r.Status = StatusScheduled
		}
	}
	r.NextAttempt = now.Unix()
	if r.ScheduledAt != "" {
		at, _ := time.Parse(time.RFC3339Nano, r.ScheduledAt)
		r.NextAttempt = at.Unix()
	}
	r.Provider = s.cfg.Provider
	if test {
		r.Provider = "outbox"
	}
	p := &prepared{id: uuid.Must(uuid.NewV7()).String(), rec: r, pl: pl}
	r.addEvent(event{Type: r.Status, At: ts(now)})
	// Refuse, visibly, what the suppression list forbids.
	for _, addr := range r.Rcpt {
		sup, err := s.suppression(ctx, ns, addr)
		if err != nil {
			return nil, err
		}
		if sup != nil {
			r.Status = StatusSuppressed
			r.Error = fmt.Sprintf("recipient %s is on the suppression list (%s)", addr, sup.Reason)
			r.addEvent(event{Type: StatusSuppressed, At: ts(now), Recipient: addr, Reason: sup.Reason})
			break
		}
	}
	return p, nil
}

// ops returns the writes that store p: the message, and its payload in
// parts when it is large.
func (p *prepared) ops() ([]*dbv1.Op, error) {
	pj, err := json.Marshal(p.pl)
	if err != nil {
		return nil, err
	}
	p.rec.Size = len(pj)
	var ops []*dbv1.Op
	if len(pj) <= inlinePayload {
		p.rec.Payload = p.pl
	} else {
		s := string(pj)
		for i := 0; len(s) > 0; i++ {
			n := min(partSize, len(s))
			// Cut on a rune boundary: the chunk is a JSON string.
			for n < len(s) && !utf8.RuneStart(s[n]) {
				n--
			}
			chunk, _ := json.Marshal(map[string]string{"chunk": s[:n]})
			s = s[n:]
			ops = append(ops, &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: partID(p.id, i), Type: typePart, Data: chunk, Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST}}})
			p.rec.Parts++
		}
	}
	data, err := json.Marshal(p.rec)
	if err != nil {
		return nil, err
	}
	msg := &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: p.id, Type: typeMessage, Data: data, Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST}}}
	return append([]*dbv1.Op{msg}, ops...), nil
}

// idemRecord is a stored idempotency key.
type idemRecord struct {
	Hash    string       `json:"hash"`
	Results []idemResult `json:"results"`
}

type idemResult struct {
	ID      string `json:"id,omitempty"`
	Status  string `json:"status,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

func toIdem(rs []Result) []idemResult {
	out := make([]idemResult, len(rs))
	for i, r := range rs {
		out[i] = idemResult{ID: r.ID, Status: r.Status}
		if r.Err != nil {
			out[i].Code, out[i].Message = string(r.Err.Code), r.Err.Message
		}
	}
	return out
}

func fromIdem(rs []idemResult) []Result {
	out := make([]Result, len(rs))
	for i, r := range rs {
		out[i] = Result{ID: r.ID, Status: r.Status}
		if r.Code != "" {
			out[i].Err = &apierr.Error{Code: apierr.Code(r.Code), Message: r.Message, Index: -1}
		}
	}
	return out
}

// SendEmail accepts one email: validated, stored and queued. An email to a
// suppressed address is stored with status suppressed and refused with an
// unprocessable error naming it.
func (s *Service) SendEmail(ctx context.Context, in *Input, o Options) (Result, error) {
	rs, err := s.send(ctx, []*Input{in}, o, false)
	if err != nil {
		return Result{}, err
	}
	if rs[0].Err != nil {
		return rs[0], rs[0].Err
	}
	return rs[0], nil
}

// SendEmails accepts up to 100 emails. Strict: any invalid email refuses
// the batch (the error names its index) and nothing is stored. Otherwise
// each result says what became of its email.
func (s *Service) SendEmails(ctx context.Context, ins []*Input, o Options) ([]Result, error) {
	if len(ins) == 0 {
		return nil, invalid("the batch is empty")
	}
	if len(ins) > MaxBatch {
		return nil, invalid("the batch has %d emails; at most %d", len(ins), MaxBatch)
	}
	for i, in := range ins {
		if len(in.Attachments) > 0 {
			return nil, apierr.AtIndex(invalid("attachments are not supported in batch sends; send that email on its own"), i)
		}
	}
	return s.send(ctx, ins, o, true)
}

func checkKey(k string) error {
	if k == "" {
		return nil
	}
	if len(k) > 256 || strings.IndexFunc(k, func(r rune) bool { return r < ' ' || r > '~' }) >= 0 {
		return apierr.New(apierr.Invalid, "Idempotency-Key must be 1-256 printable ASCII characters")
	}
	return nil
}

func (s *Service) send(ctx context.Context, ins []*Input, o Options, batch bool) ([]Result, error) {
	if err := checkKey(o.IdempotencyKey); err != nil {
		return nil, err
	}
	now := s.now()
	results := make([]Result, len(ins))
	var ready []*prepared
	var idx []int
	for i, in := range ins {
		p, err := s.prepare(ctx, in, o.Test, now)
		if err != nil {
			e := apierr.From(err)
			if e.Code == apierr.Internal {
				return nil, s.internal(ctx, "prepare email", err)
			}
			if batch && o.Strict {
				return nil, apierr.AtIndex(e, i)
			}
			results[i] = Result{Err: e}
			if batch {
				results[i].Err = apierr.AtIndex(e, i).(*apierr.Error)
			}
			continue
		}
		if p.rec.Status == StatusSuppressed && batch && o.Strict {
			return nil, apierr.AtIndex(invalid("%s; DELETE /v1/email/suppressions/%s to allow it again", p.rec.Error, firstSuppressed(p.rec)), i)
		}
		ready = append(ready, p)
		idx = append(idx, i)
	}
	var ops []*dbv1.Op
	for _, p := range ready {
		po, err := p.ops()
		if err != nil {
			return nil, s.internal(ctx, "encode email", err)
		}
		ops = append(ops, po...)
	}
	for j, p := range ready {
		s.metrics.accepted.WithLabelValues(p.rec.Provider, p.rec.Status).Inc()
		r := Result{ID: p.id, Status: p.rec.Status}
		if p.rec.Status == StatusSuppressed {
			r.Err = invalid("email %s not sent: %s; DELETE /v1/email/suppressions/%s to allow it again", p.id, p.rec.Error, firstSuppressed(p.rec))
			if batch {
				r.Err = apierr.AtIndex(r.Err, idx[j]).(*apierr.Error)
			}
		}
		results[idx[j]] = r
	}
	var idemID, hash string
	if o.IdempotencyKey != "" {
		b, _ := json.Marshal(struct {
			Ins    []*Input
			Ns     []string
			Test   bool
			Strict bool
			Batch  bool
		}{ins, nsOf(ins), o.Test, o.Strict, batch})
		hash = hashHex(string(b))
		idemID = "idem_" + hashHex(nsOf(ins)[0], o.IdempotencyKey)[:48]
		data, _ := json.Marshal(idemRecord{Hash: hash, Results: toIdem(results)})
		ops = append([]*dbv1.Op{{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: idemID, Type: typeIdempotency, Data: data,
			Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST, ExpiresAt: now.Add(idempotencyTTL).UnixMicro()}}}}, ops...)
	}
	if len(ops) == 0 {
		return results, nil
	}
	if idemID == "" && s.commits != nil && len(ops) <= 20 {
		// Small writes without a key share transactions with concurrent
		// sends (group commit).
		c := &commit{ops: ops, ready: ready, now: now, done: make(chan error, 1)}
		select {
		case s.commits <- c:
		case <-s.stopped:
			return nil, apierr.New(apierr.Unavailable, "the email service is shutting down; retry")
		case <-ctx.Done():
			return nil, apierr.New(apierr.Unavailable, "request cancelled")
		}
		var err error
		select {
		case err = <-c.done:
		case <-s.stopped:
			// A commit being written finishes; one still waiting does not.
			select {
			case err = <-c.done:
			case <-time.After(5 * time.Second):
				err = apierr.New(apierr.Unavailable, "the email service is shutting down; retry")
			}
		}
		if err != nil {
			return nil, err
		}
		return results, nil
	}
	if _, err := s.db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: ops})); err != nil {
		if idemID != "" && apierr.Is(err, apierr.PreconditionFailed) && apierr.From(err).Index == 0 {
			return s.replay(ctx, idemID, hash)
		}
		return nil, s.internal(ctx, "store emails", err)
	}
	if err := s.enqueue(ctx, ready, now); err != nil {
		s.undo(ctx, ops)
		s.log.ErrorContext(ctx, "enqueue emails", "err", err)
		return nil, errQueue
	}
	return results, nil
}

var errQueue = apierr.New(apierr.Unavailable, "the email queue is unavailable; nothing was sent, retry later")

// undo deletes what ops wrote, after a failed enqueue, so that a retry
// (with the same key) can succeed.
func (s *Service) undo(ctx context.Context, ops []*dbv1.Op) {
	var undo []*dbv1.Op
	for _, op := range ops {
		undo = append(undo, &dbv1.Op{Op: &dbv1.Op_Delete{Delete: &dbv1.DeleteRequest{Ns: Namespace, Id: op.GetWrite().Id}}})
	}
	if _, err := s.db.Batch(context.WithoutCancel(ctx), connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: undo})); err != nil {
		s.log.ErrorContext(ctx, "undo stored emails after a failed enqueue", "err", err)
	}
}

// commit is one request's writes waiting for a shared transaction.
type commit struct {
	ops   []*dbv1.Op
	ready []*prepared
	now   time.Time
	done  chan error
}

// committer takes the waiting commits, writes them in one atomic batch
// and queues their emails in one send, so that concurrent requests share
// one database transaction (SQLite has one writer) and one round of queue
// acknowledgements. If the shared batch fails, each commit is retried on
// its own, so one request's failure is not another's.
func (s *Service) committer(ctx context.Context) {
	for {
		var first *commit
		select {
		case first = <-s.commits:
		case <-ctx.Done():
			return
		}
		group := []*commit{first}
		n, msgs := len(first.ops), len(first.ready)
	more:
		for n < 500 && msgs < 100 {
			select {
			case c := <-s.commits:
				group = append(group, c)
				n += len(c.ops)
				msgs += len(c.ready)
			default:
				break more
			}
		}
		s.flush(ctx, group)
	}
}

func (s *Service) flush(ctx context.Context, group []*commit) {
	var ops []*dbv1.Op
	var ready []*prepared
	for _, c := range group {
		ops = append(ops, c.ops...)
		ready = append(ready, c.ready...)
	}
	if _, err := s.db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: ops})); err != nil {
		if len(group) == 1 {
			first := group[0]
			first.done <- s.internal(ctx, "store emails", err)
			return
		}
		for _, c := range group {
			s.flush(ctx, []*commit{c})
		}
		return
	}
	if err := s.enqueue(ctx, ready, group[0].now); err != nil {
		s.undo(ctx, ops)
		s.log.ErrorContext(ctx, "enqueue emails", "err", err)
		for _, c := range group {
			c.done <- errQueue
		}
		return
	}
	for _, c := range group {
		c.done <- nil
	}
}

func firstSuppressed(r *record) string {
	for _, e := range r.Events {
		if e.Type == StatusSuppressed {
			return e.Recipient
		}
	}
	return ""
}

func nsOf(ins []*Input) []string {
	out := make([]string, len(ins))
	for i, in := range ins {
		out[i] = in.Ns
		if out[i] == "" {
			out[i] = DefaultNamespace
		}
	}
	return out
}

// replay answers a request whose idempotency key was used before.
func (s *Service) replay(ctx context.Context, idemID, hash string) ([]Result, error) {
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: idemID}))
	if err != nil {
		if apierr.Is(err, apierr.NotFound) {
			// It expired between our write and this read.
			return nil, apierr.New(apierr.Conflict, "concurrent_idempotent_requests: another request with this Idempotency-Key is in progress; retry")
		}
		return nil, s.internal(ctx, "read idempotency key", err)
	}
	var rec idemRecord
	if err := json.Unmarshal(res.Msg.Thing.Data, &rec); err != nil {
		return nil, s.internal(ctx, "decode idempotency key", err)
	}
	if rec.Hash != hash {
		return nil, apierr.New(apierr.Conflict, "invalid_idempotent_request: this Idempotency-Key was used with a different request body in the last 24 hours")
	}
	return fromIdem(rec.Results), nil
}

// msgBody is the body of a send-queue message.
type msgBody struct {
	ID string `json:"id"`
}

// enqueue queues the stored emails that are to be sent.
func (s *Service) enqueue(ctx context.Context, ps []*prepared, now time.Time) error {
	var out []queue.Outgoing
	for _, p := range ps {
		if p.rec.Status == StatusSuppressed {
			continue
		}
		b, _ := json.Marshal(msgBody{ID: p.id})
		o := queue.Outgoing{Body: b}
		if p.rec.ScheduledAt != "" {
			at, _ := time.Parse(time.RFC3339Nano, p.rec.ScheduledAt)
			o.Delay = min(at.Sub(now), queue.MaxDelay)
		}
		out = append(out, o)
	}
	if len(out) == 0 {
		return nil
	}
	_, err := s.q.Send(ctx, SendQueue, out...)
	return err
}
