package thingsdb

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"strings"
	"time"
	"unicode"
)

// Embedder turns texts into embeddings of a fixed dimension.
type Embedder interface {
	// Name identifies the embedder in logs and stats.
	Name() string
	// Dims is the dimension of every embedding it returns.
	Dims() int
	// Embed returns one embedding per text, in order.
	Embed(ctx context.Context, texts []string) ([][]float32, error)
}

// LexicalHashEmbedder is the built-in offline embedder. It is lexical, not
// semantic: it hashes each lower-cased word (and each pair of adjacent
// words) into one of Dimensions buckets with a hashed sign (feature
// hashing) and normalises the result. Texts sharing words get similar
// vectors; synonyms do not. It is for development and tests without a
// model server; use an OpenAI-compatible provider for meaning.
type LexicalHashEmbedder struct {
	Dimensions int
}

// Name implements Embedder.
func (e LexicalHashEmbedder) Name() string { return fmt.Sprintf("lexical-hash-%d", e.Dimensions) }

// Dims implements Embedder.
func (e LexicalHashEmbedder) Dims() int { return e.Dimensions }

// Embed implements Embedder.
func (e LexicalHashEmbedder) Embed(_ context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		out[i] = e.embed(t)
	}
	return out, nil
}

func (e LexicalHashEmbedder) embed(text string) []float32 {
	v := make([]float32, e.Dimensions)
	words := strings.FieldsFunc(strings.ToLower(text), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	add := func(feature string, w float32) {
		h := fnv.New64a()
		h.Write([]byte(feature))
		x := h.Sum64()
		sign := float32(1)
		if x>>63 == 1 {
			sign = -1
		}
		v[int(x%uint64(e.Dimensions))] += sign * w
	}
	for i, w := range words {
		add(w, 1)
		if i > 0 {
			add(words[i-1]+" "+w, 0.5)
		}
	}
	// Dampen repeated words: sqrt of each bucket's magnitude.
	for i, f := range v {
		if f != 0 {
			v[i] = float32(math.Copysign(math.Sqrt(math.Abs(float64(f))), float64(f)))
		}
	}
	if u := normalize(v); u != nil {
		return u
	}
	return v
}

// OpenAIEmbedder calls an OpenAI-compatible embeddings endpoint: POST
// {BaseURL}/embeddings with {"model","input":[...],"encoding_format":"float"}
// (and "dimensions" when set). OpenAI (https://api.openai.com/v1), Ollama
// (http://localhost:11434/v1) and other compatible servers answer it.
type OpenAIEmbedder struct {
	BaseURL    string // up to and including /v1
	Model      string
	Dimensions int
	// SendDimensions adds "dimensions" to requests (OpenAI's
	// text-embedding-3 models shorten their vectors with it; some
	// servers refuse the field).
	SendDimensions bool
	APIKey         string
	Client         *http.Client
}

// Name implements Embedder.
func (e *OpenAIEmbedder) Name() string { return "openai:" + e.Model }

// Dims implements Embedder.
func (e *OpenAIEmbedder) Dims() int { return e.Dimensions }

// maxEmbedResponse bounds the response body read from the provider.
const maxEmbedResponse = 64 << 20

// Embed implements Embedder.
func (e *OpenAIEmbedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if len(texts) == 0 {
		return nil, nil
	}
	body := map[string]any{"model": e.Model, "input": texts, "encoding_format": "float"}
	if e.SendDimensions && e.Dimensions > 0 {
		body["dimensions"] = e.Dimensions
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(e.BaseURL, "/")+"/embeddings", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if e.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+e.APIKey)
	}
	client := e.Client
	if client == nil {
		client = &http.Client{Timeout: 60 * time.Second}
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("embeddings request: %w", err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxEmbedResponse))
	if err != nil {
		return nil, fmt.Errorf("embeddings response: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		var eb struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		json.Unmarshal(raw, &eb)
		msg := eb.Error.Message
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return nil, fmt.Errorf("embeddings provider answered %d: %s", res.StatusCode, msg)
	}
	var out struct {
		Data []struct {
			Index     int       `json:"index"`
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("embeddings response is not the expected JSON: %w", err)
	}
	if len(out.Data) != len(texts) {
		return nil, fmt.Errorf("embeddings provider returned %d embeddings for %d inputs", len(out.Data), len(texts))
	}
	vecs := make([][]float32, len(texts))
	for _, d := range out.Data {
		if d.Index < 0 || d.Index >= len(texts) || vecs[d.Index] != nil {
			return nil, fmt.Errorf("embeddings provider returned a bad index %d", d.Index)
		}
		if e.Dimensions > 0 && len(d.Embedding) != e.Dimensions {
			return nil, fmt.Errorf("embeddings provider returned %d dimensions; configured %d", len(d.Embedding), e.Dimensions)
		}
		vecs[d.Index] = d.Embedding
	}
	return vecs, nil
}

// EmbedderConfig chooses the db service's embedder from its options.
type EmbedderConfig struct {
	// Kind is "" (none), "lexical-hash" (the offline lexical embedder)
	// or "openai" (any OpenAI-compatible server).
	Kind string
	// URL is the provider's base URL up to /v1 (openai).
	URL    string
	Model  string
	APIKey string
	// Dims is the embedding dimension: required for lexical-hash and
	// openai (for OpenAI's text-embedding-3 models it is also sent).
	Dims int
}

// NewEmbedder returns the embedder c describes, or nil for Kind "".
func NewEmbedder(c EmbedderConfig) (Embedder, error) {
	switch c.Kind {
	case "":
		return nil, nil
	case "lexical-hash":
		if c.Dims < 8 || c.Dims > MaxEmbedding {
			return nil, fmt.Errorf("the lexical-hash embedder needs dimensions between 8 and %d", MaxEmbedding)
		}
		return LexicalHashEmbedder{Dimensions: c.Dims}, nil
	case "openai":
		if c.URL == "" || c.Model == "" || c.Dims <= 0 || c.Dims > MaxEmbedding {
			return nil, fmt.Errorf("the openai embedder needs a base URL (such as https://api.openai.com/v1 or http://localhost:11434/v1), a model and dimensions")
		}
		return &OpenAIEmbedder{BaseURL: c.URL, Model: c.Model, Dimensions: c.Dims, APIKey: c.APIKey,
			SendDimensions: strings.HasPrefix(c.Model, "text-embedding-3")}, nil
	}
	return nil, fmt.Errorf("unknown embedder %q: use lexical-hash or openai", c.Kind)
}
