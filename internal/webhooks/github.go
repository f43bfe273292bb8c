package webhooks

import (
	"context"
	"strconv"
	"time"
)

// GitHub events become Repository, Commit, PullRequest, Issue and Release
// things in the configured namespace, with ids github:repo:<id>,
// github:commit:<sha>, github:pr:<id>, github:issue:<id> and
// github:release:<id>, each related from its repository (hasCommit,
// hasPullRequest, hasIssue, hasRelease). Pull requests and issues are
// written in the order of their updated_at, so a late older delivery does
// not undo a newer one.

type ghRepo struct {
	ID            int64  `json:"id"`
	Name          string `json:"name"`
	FullName      string `json:"full_name"`
	HTMLURL       string `json:"html_url"`
	Private       bool   `json:"private"`
	DefaultBranch string `json:"default_branch"`
	Owner         struct {
		Login string `json:"login"`
	} `json:"owner"`
}

type ghUser struct {
	Login string `json:"login"`
}

func (s *Service) githubHandlers() map[string]handler {
	return map[string]handler{
		"push":         s.githubPush,
		"pull_request": s.githubPullRequest,
		"issues":       s.githubIssue,
		"release":      s.githubRelease,
	}
}

func repoID(r *ghRepo) string { return "github:repo:" + strconv.FormatInt(r.ID, 10) }

func (s *Service) githubRepo(ctx context.Context, r *ghRepo) (string, error) {
	if r.ID == 0 {
		return "", permanentf("repository missing")
	}
	id := repoID(r)
	_, err := s.upsert(ctx, s.cfg.Namespace, id, "Repository", map[string]any{
		"githubId": r.ID, "name": r.Name, "fullName": r.FullName, "url": r.HTMLURL, "private": r.Private,
		"defaultBranch": r.DefaultBranch, "owner": r.Owner.Login,
	}, 0, false)
	return id, err
}

// githubTime reads an RFC 3339 time as Unix milliseconds (0 if absent).
func githubTime(v string) int64 {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return 0
	}
	return t.UnixMilli()
}

func (s *Service) githubPush(ctx context.Context, in inbound) error {
	body := in.Body
	var p struct {
		Ref        string `json:"ref"`
		Before     string `json:"before"`
		After      string `json:"after"`
		Repository ghRepo `json:"repository"`
		Pusher     struct {
			Name string `json:"name"`
		} `json:"pusher"`
		Commits []struct {
			ID        string `json:"id"`
			Message   string `json:"message"`
			Timestamp string `json:"timestamp"`
			URL       string `json:"url"`
			Author    struct {
				Name     string `json:"name"`
				Email    string `json:"email"`
				Username string `json:"username"`
			} `json:"author"`
		} `json:"commits"`
	}
	if err := decode(body, &p); err != nil {
		return err
	}
	repo, err := s.githubRepo(ctx, &p.Repository)
	if err != nil {
		return err
	}
	ns := s.cfg.Namespace
	if _, err := s.upsert(ctx, ns, repo, "Repository", map[string]any{"lastPushRef": p.Ref, "lastPushSha": p.After, "lastPusher": p.Pusher.Name}, 0, false); err != nil {
		return err
	}
	for _, c := range p.Commits {
		if c.ID == "" {
			continue
		}
		id := "github:commit:" + c.ID
		msg := c.Message
		if len(msg) > 4096 {
			msg = msg[:4096]
		}
		if _, err := s.upsert(ctx, ns, id, "Commit", map[string]any{
			"sha": c.ID, "message": msg, "timestamp": c.Timestamp, "url": c.URL, "ref": p.Ref,
			"author": c.Author.Name, "authorEmail": c.Author.Email, "authorLogin": c.Author.Username, "repository": repo,
		}, 0, true); err != nil {
			return err
		}
		if err := s.relate(ctx, ns, repo, "hasCommit", id); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) githubPullRequest(ctx context.Context, in inbound) error {
	body := in.Body
	var p struct {
		Action      string `json:"action"`
		Number      int64  `json:"number"`
		Repository  ghRepo `json:"repository"`
		PullRequest struct {
			ID        int64  `json:"id"`
			Number    int64  `json:"number"`
			Title     string `json:"title"`
			State     string `json:"state"`
			Merged    bool   `json:"merged"`
			Draft     bool   `json:"draft"`
			HTMLURL   string `json:"html_url"`
			User      ghUser `json:"user"`
			UpdatedAt string `json:"updated_at"`
			MergedAt  string `json:"merged_at"`
			Head      struct {
				Ref string `json:"ref"`
				Sha string `json:"sha"`
			} `json:"head"`
			Base struct {
				Ref string `json:"ref"`
			} `json:"base"`
		} `json:"pull_request"`
	}
	if err := decode(body, &p); err != nil {
		return err
	}
	pr := p.PullRequest
	if pr.ID == 0 {
		return permanentf("pull_request missing")
	}
	repo, err := s.githubRepo(ctx, &p.Repository)
	if err != nil {
		return err
	}
	id := "github:pr:" + strconv.FormatInt(pr.ID, 10)
	f := map[string]any{"githubId": pr.ID, "number": pr.Number, "title": pr.Title, "state": pr.State, "merged": pr.Merged,
		"draft": pr.Draft, "url": pr.HTMLURL, "author": pr.User.Login, "headRef": pr.Head.Ref, "headSha": pr.Head.Sha,
		"baseRef": pr.Base.Ref, "lastAction": p.Action, "updatedAt": pr.UpdatedAt, "repository": repo}
	if pr.MergedAt != "" {
		f["mergedAt"] = pr.MergedAt
	}
	if _, err := s.upsert(ctx, s.cfg.Namespace, id, "PullRequest", f, githubTime(pr.UpdatedAt), false); err != nil {
		return err
	}
	return s.relate(ctx, s.cfg.Namespace, repo, "hasPullRequest", id)
}

func (s *Service) githubIssue(ctx context.Context, in inbound) error {
	body := in.Body
	var p struct {
		Action     string `json:"action"`
		Repository ghRepo `json:"repository"`
		Issue      struct {
			ID        int64  `json:"id"`
			Number    int64  `json:"number"`
			Title     string `json:"title"`
			State     string `json:"state"`
			HTMLURL   string `json:"html_url"`
			User      ghUser `json:"user"`
			UpdatedAt string `json:"updated_at"`
			Labels    []struct {
				Name string `json:"name"`
			} `json:"labels"`
		} `json:"issue"`
	}
	if err := decode(body, &p); err != nil {
		return err
	}
	is := p.Issue
	if is.ID == 0 {
		return permanentf("issue missing")
	}
	repo, err := s.githubRepo(ctx, &p.Repository)
	if err != nil {
		return err
	}
	labels := []string{}
	for _, l := range is.Labels {
		labels = append(labels, l.Name)
	}
	id := "github:issue:" + strconv.FormatInt(is.ID, 10)
	f := map[string]any{"githubId": is.ID, "number": is.Number, "title": is.Title, "state": is.State, "url": is.HTMLURL,
		"author": is.User.Login, "labels": labels, "lastAction": p.Action, "updatedAt": is.UpdatedAt, "repository": repo,
		"deleted": p.Action == "deleted"}
	if _, err := s.upsert(ctx, s.cfg.Namespace, id, "Issue", f, githubTime(is.UpdatedAt), false); err != nil {
		return err
	}
	return s.relate(ctx, s.cfg.Namespace, repo, "hasIssue", id)
}

func (s *Service) githubRelease(ctx context.Context, in inbound) error {
	body := in.Body
	var p struct {
		Action     string `json:"action"`
		Repository ghRepo `json:"repository"`
		Release    struct {
			ID          int64  `json:"id"`
			TagName     string `json:"tag_name"`
			Name        string `json:"name"`
			Draft       bool   `json:"draft"`
			Prerelease  bool   `json:"prerelease"`
			HTMLURL     string `json:"html_url"`
			PublishedAt string `json:"published_at"`
			Author      ghUser `json:"author"`
		} `json:"release"`
	}
	if err := decode(body, &p); err != nil {
		return err
	}
	rel := p.Release
	if rel.ID == 0 {
		return permanentf("release missing")
	}
	repo, err := s.githubRepo(ctx, &p.Repository)
	if err != nil {
		return err
	}
	id := "github:release:" + strconv.FormatInt(rel.ID, 10)
	f := map[string]any{"githubId": rel.ID, "tag": rel.TagName, "name": rel.Name, "draft": rel.Draft, "prerelease": rel.Prerelease,
		"url": rel.HTMLURL, "publishedAt": rel.PublishedAt, "author": rel.Author.Login, "lastAction": p.Action, "repository": repo,
		"deleted": p.Action == "deleted"}
	if _, err := s.upsert(ctx, s.cfg.Namespace, id, "Release", f, 0, false); err != nil {
		return err
	}
	return s.relate(ctx, s.cfg.Namespace, repo, "hasRelease", id)
}
