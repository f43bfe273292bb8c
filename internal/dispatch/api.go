package dispatch

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// NamespaceInput is the body of PUT /v1/dispatch/namespaces/{ns}.
type NamespaceInput struct {
	Access   string   `json:"access"`
	Limits   Limits   `json:"limits"`
	Outbound Outbound `json:"outbound"`
}

func (s *Service) checkNamespaceInput(in *NamespaceInput) error {
	switch in.Access {
	case "":
		in.Access = AccessPublic
	case AccessPublic, AccessPrivate:
	default:
		return apierr.New(apierr.Invalid, "access must be public or private")
	}
	if _, err := in.Limits.within(s.cfg.Max, "namespace"); err != nil {
		return err
	}
	switch in.Outbound.Mode {
	case "":
		in.Outbound.Mode = OutboundNone
		fallthrough
	case OutboundNone:
		if len(in.Outbound.Allow) > 0 || in.Outbound.Handler != "" {
			return apierr.New(apierr.Invalid, "outbound mode none takes no allow list and no handler")
		}
	case OutboundAllowlist:
		if in.Outbound.Handler != "" {
			return apierr.New(apierr.Invalid, "outbound mode allowlist takes no handler")
		}
		if len(in.Outbound.Allow) > 256 {
			return apierr.New(apierr.Invalid, "an outbound allowlist has at most 256 hosts")
		}
		for _, h := range in.Outbound.Allow {
			if h == "" || len(h) > 253 || !validHostEntry(h) {
				return apierr.New(apierr.Invalid, "outbound allow entry %q is not a host name such as api.example.com, *.example.com or 127.0.0.1:8080", clip(h))
			}
		}
	case OutboundHandler:
		u, err := url.Parse(in.Outbound.Handler)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return apierr.New(apierr.Invalid, "outbound handler must be an http or https URL")
		}
		if len(in.Outbound.Allow) > 0 {
			return apierr.New(apierr.Invalid, "outbound mode handler takes no allow list")
		}
	default:
		return apierr.New(apierr.Invalid, "outbound mode must be none, allowlist or handler")
	}
	return nil
}

func validHostEntry(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':' || c == '*' && i == 0 && len(h) > 2 && h[1] == '.' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// PutNamespace creates or replaces a dispatch namespace.
func (s *Service) PutNamespace(ctx context.Context, name string, in NamespaceInput) (*NamespaceInfo, bool, error) {
	if err := checkName("namespace", name); err != nil {
		return nil, false, err
	}
	if err := s.checkNamespaceInput(&in); err != nil {
		return nil, false, err
	}
	n := NamespaceInfo{Name: name, Access: in.Access, Limits: in.Limits, Outbound: in.Outbound, CreatedAt: now()}
	n.UpdatedAt = n.CreatedAt
	cond := dbv1.Condition_CONDITION_MUST_NOT_EXIST
	var ifVersion int64
	var old NamespaceInfo
	if v, err := s.st.get(ctx, nsID(name), &old); err == nil {
		n.CreatedAt, cond, ifVersion = old.CreatedAt, dbv1.Condition_CONDITION_NONE, v
	} else if !apierr.Is(err, apierr.NotFound) {
		return nil, false, err
	}
	_, err := s.st.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{
		Ns: Namespace, Id: nsID(name), Type: typeNamespace, Data: mustJSON(n), Condition: cond, IfVersion: ifVersion,
	}}))
	if err != nil {
		if apierr.Is(err, apierr.PreconditionFailed) {
			return nil, false, apierr.New(apierr.Conflict, "namespace %s changed at the same time; retry", name)
		}
		return nil, false, err
	}
	s.invalidate(name, "")
	return &n, ifVersion == 0, nil
}

// Namespace returns a dispatch namespace.
func (s *Service) Namespace(ctx context.Context, name string) (*NamespaceInfo, error) {
	if !validName(name) {
		return nil, apierr.New(apierr.NotFound, "dispatch namespace %s not found", clip(name))
	}
	return s.st.namespace(ctx, name)
}

// Namespaces lists the dispatch namespaces.
func (s *Service) Namespaces(ctx context.Context) ([]*NamespaceInfo, error) {
	items, err := s.st.listAll(ctx, typeNamespace, "")
	if err != nil {
		return nil, err
	}
	out := make([]*NamespaceInfo, 0, len(items))
	for _, t := range items {
		var n NamespaceInfo
		if json.Unmarshal(t.Data, &n) == nil {
			out = append(out, &n)
		}
	}
	return out, nil
}

// DeleteNamespace deletes an empty dispatch namespace.
func (s *Service) DeleteNamespace(ctx context.Context, name string) error {
	if _, err := s.Namespace(ctx, name); err != nil {
		return err
	}
	if slices.Contains(DefaultNamespaces, name) {
		return apierr.New(apierr.Conflict, "namespace %s is built in and cannot be deleted", name)
	}
	scripts, err := s.Scripts(ctx, name, nil)
	if err != nil {
		return err
	}
	if len(scripts) > 0 {
		return apierr.New(apierr.Conflict, "namespace %s still has %d scripts; delete them first", name, len(scripts))
	}
	if _, err := s.st.db.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: Namespace, Id: nsID(name)})); err != nil {
		return err
	}
	s.invalidate(name, "")
	return nil
}

// Deploy validates and compiles module and makes it the script's current
// version. A bad module is refused with the reason (Unprocessable) and the
// running version stays.
func (s *Service) Deploy(ctx context.Context, ns, name string, module []byte, md Metadata, by string) (*Script, error) {
	if err := checkName("script", name); err != nil {
		return nil, err
	}
	if err := md.validate(); err != nil {
		return nil, err
	}
	n, err := s.Namespace(ctx, ns)
	if err != nil {
		return nil, err
	}
	nl := s.nsLimits(n)
	limits, err := md.Limits.within(nl, "script")
	if err != nil {
		return nil, err
	}
	if len(module) == 0 {
		return nil, apierr.New(apierr.Invalid, "the module is empty")
	}
	sha := sum(module)
	if _, err := s.eng.compile(ctx, module, sha, pagesFor(limits.MemoryMB)); err != nil {
		return nil, err
	}
	sc, ver, err := s.st.script(ctx, ns, name)
	created := false
	if apierr.Is(err, apierr.NotFound) {
		sc, created = &Script{Namespace: ns, Name: name, Next: 1, CreatedAt: now()}, true
	} else if err != nil {
		return nil, err
	}
	if md.Tags == nil {
		md.Tags = []string{}
	}
	v := Version{Version: sc.Next, SHA256: sha, Size: len(module), Chunks: (len(module) + chunkBytes - 1) / chunkBytes,
		Tags: md.Tags, Env: md.Env, Limits: md.Limits, CreatedAt: now(), CreatedBy: by}
	sc.Next++
	sc.Current = v
	sc.UpdatedAt = v.CreatedAt
	sc.History = append(sc.History, v.Version)
	if len(sc.History) > MaxVersions {
		sc.History = sc.History[len(sc.History)-MaxVersions:]
	}
	// The module's chunks go first, a few per batch so that each call to a
	// db service in another process stays under its body limit; they are
	// keyed by the module's hash and reached only through the version
	// written below, so a deploy that fails after them changes nothing a
	// request sees (a retry overwrites them).
	chunks := chunkOps(ns, name, sha, module)
	for len(chunks) > 0 {
		n := min(len(chunks), chunksPerBatch)
		if err := s.st.batch(ctx, chunks[:n]); err != nil {
			return nil, err
		}
		chunks = chunks[n:]
	}
	ops := []*dbv1.Op{putOp(versionID(ns, name, v.Version), typeVersion, mustJSON(v), dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0)}
	if drop := s.dropped(sc); len(drop) > 0 {
		keepSHA := map[string]bool{sha: true}
		for _, k := range sc.History {
			if k == v.Version {
				continue
			}
			kv, err := s.st.version(ctx, ns, name, k)
			if err != nil {
				return nil, err
			}
			keepSHA[kv.SHA256] = true
		}
		dops, err := s.st.dropOps(ctx, sc, sc.History, keepSHA)
		if err != nil {
			return nil, err
		}
		ops = append(ops, dops...)
	}
	sc.Stored = slices.Clone(sc.History)
	var addHosts, dropHosts []string
	if md.Hosts != nil && s.cfg.Reserved != nil {
		for _, h := range *md.Hosts {
			if s.cfg.Reserved(h) {
				return nil, apierr.New(apierr.Forbidden, "host %s is the platform's own and cannot reach a script", h)
			}
		}
	}
	if md.Hosts != nil {
		for _, h := range *md.Hosts {
			if !slices.Contains(sc.Hosts, h) {
				addHosts = append(addHosts, h)
			}
		}
		for _, h := range sc.Hosts {
			if !slices.Contains(*md.Hosts, h) {
				dropHosts = append(dropHosts, h)
			}
		}
		sc.Hosts = slices.Clone(*md.Hosts)
	}
	for _, h := range addHosts {
		ops = append(ops, putOp(hostID(h), typeHost, mustJSON(hostRoute{Host: h, Namespace: ns, Script: name}), dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0))
	}
	for _, h := range dropHosts {
		ops = append(ops, deleteOp(hostID(h)))
	}
	if created {
		ops = append(ops, putOp(scriptID(ns, name), typeScript, mustJSON(sc), dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0))
	} else {
		ops = append(ops, putOp(scriptID(ns, name), typeScript, mustJSON(sc), dbv1.Condition_CONDITION_NONE, ver))
	}
	if err := s.st.batch(ctx, ops); err != nil {
		if len(addHosts) > 0 && (apierr.Is(err, apierr.PreconditionFailed) || apierr.Is(err, apierr.Conflict)) {
			if taken := s.takenHost(ctx, addHosts); taken != "" {
				return nil, apierr.New(apierr.Conflict, "host %s already reaches another script", taken)
			}
		}
		if apierr.Is(err, apierr.PreconditionFailed) || apierr.Is(err, apierr.Conflict) {
			return nil, apierr.New(apierr.Conflict, "script %s/%s was changed at the same time; retry", ns, name)
		}
		return nil, err
	}
	s.invalidate(ns, name)
	s.setHosts(ns, name, addHosts, dropHosts)
	s.log.InfoContext(ctx, "script deployed", "ns", ns, "script", name, "version", v.Version, "sha256", sha, "bytes", len(module))
	return sc, nil
}

// dropped lists the stored versions no longer in the history.
func (s *Service) dropped(sc *Script) []int {
	var out []int
	for _, n := range sc.Stored {
		if !slices.Contains(sc.History, n) {
			out = append(out, n)
		}
	}
	return out
}

// Script returns a script.
func (s *Service) Script(ctx context.Context, ns, name string) (*Script, error) {
	if !validName(ns) || !validName(name) {
		return nil, apierr.New(apierr.NotFound, "script %s not found in namespace %s", clip(name), clip(ns))
	}
	sc, _, err := s.st.script(ctx, ns, name)
	return sc, err
}

// Scripts lists a namespace's scripts that carry every tag in tags.
func (s *Service) Scripts(ctx context.Context, ns string, tags []string) ([]*Script, error) {
	if _, err := s.Namespace(ctx, ns); err != nil {
		return nil, err
	}
	items, err := s.st.listAll(ctx, typeScript, ns)
	if err != nil {
		return nil, err
	}
	out := []*Script{}
	for _, t := range items {
		var sc Script
		if json.Unmarshal(t.Data, &sc) == nil && hasAllTags(sc.Current.Tags, tags) {
			out = append(out, &sc)
		}
	}
	return out, nil
}

// Versions returns the stored versions of a script, oldest first.
func (s *Service) Versions(ctx context.Context, ns, name string) ([]*Version, error) {
	sc, err := s.Script(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	out := []*Version{}
	for _, n := range sc.Stored {
		v, err := s.st.version(ctx, ns, name, n)
		if apierr.Is(err, apierr.NotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Rollback makes the version before the current one current again.
func (s *Service) Rollback(ctx context.Context, ns, name string) (*Script, error) {
	if !validName(ns) || !validName(name) {
		return nil, apierr.New(apierr.NotFound, "script %s not found in namespace %s", clip(name), clip(ns))
	}
	sc, ver, err := s.st.script(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	if len(sc.History) < 2 {
		return nil, apierr.New(apierr.Conflict, "script %s/%s has no earlier version to roll back to", ns, name)
	}
	prev, err := s.st.version(ctx, ns, name, sc.History[len(sc.History)-2])
	if err != nil {
		return nil, err
	}
	sc.History = sc.History[:len(sc.History)-1]
	sc.Current = *prev
	sc.UpdatedAt = now()
	_, err = s.st.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{
		Ns: Namespace, Id: scriptID(ns, name), Type: typeScript, Data: mustJSON(sc), IfVersion: ver,
	}}))
	if err != nil {
		if apierr.Is(err, apierr.PreconditionFailed) {
			return nil, apierr.New(apierr.Conflict, "script %s/%s was changed at the same time; retry", ns, name)
		}
		return nil, err
	}
	s.invalidate(ns, name)
	s.log.InfoContext(ctx, "script rolled back", "ns", ns, "script", name, "version", prev.Version)
	return sc, nil
}

// DeleteScript deletes a script with its versions and modules.
func (s *Service) DeleteScript(ctx context.Context, ns, name string) error {
	sc, err := s.Script(ctx, ns, name)
	if err != nil {
		return err
	}
	ops, err := s.st.dropOps(ctx, sc, nil, map[string]bool{})
	if err != nil {
		return err
	}
	ops = append(ops, deleteOp(scriptID(ns, name)))
	for _, h := range sc.Hosts {
		ops = append(ops, deleteOp(hostID(h)))
	}
	if err := s.st.batch(ctx, ops); err != nil {
		return err
	}
	s.invalidate(ns, name)
	s.setHosts(ns, name, nil, sc.Hosts)
	s.log.InfoContext(ctx, "script deleted", "ns", ns, "script", name)
	return nil
}

// DeleteByTags deletes a namespace's scripts that carry every tag in tags
// and returns their names.
func (s *Service) DeleteByTags(ctx context.Context, ns string, tags []string) ([]string, error) {
	if len(tags) == 0 {
		return nil, apierr.New(apierr.Invalid, "give the tags of the scripts to delete: ?tags=a,b")
	}
	scripts, err := s.Scripts(ctx, ns, tags)
	if err != nil {
		return nil, err
	}
	names := []string{}
	for _, sc := range scripts {
		if err := s.DeleteScript(ctx, ns, sc.Name); err != nil && !apierr.Is(err, apierr.NotFound) {
			return names, err
		}
		names = append(names, sc.Name)
	}
	return names, nil
}
