package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/llms/openai"
)

// Providers, the values of LLM_PROVIDER.
const (
	ProviderBuiltin = "builtin" // the offline agent (Builtin); the default
	ProviderOpenAI  = "openai"  // any OpenAI-compatible chat-completions endpoint
	ProviderOllama  = "ollama"  // an Ollama server
)

// Defaults for an empty base URL or model (outside production, where app
// requires both).
const (
	DefaultOpenAIBaseURL = "https://api.openai.com/v1"
	DefaultOpenAIModel   = "gpt-4o-mini"
	DefaultOllamaBaseURL = "http://localhost:11434"
	DefaultOllamaModel   = "llama3.2"
)

// ProviderConfig chooses and configures the model.
type ProviderConfig struct {
	// Provider is ProviderBuiltin (also when empty), ProviderOpenAI or
	// ProviderOllama.
	Provider string
	// BaseURL is the API base: for openai the URL that /chat/completions
	// is appended to (https://api.openai.com/v1, http://localhost:8080/v1
	// for llama.cpp, ...); for ollama the server (http://localhost:11434).
	BaseURL string
	// APIKey is sent as a bearer token; local servers need none.
	APIKey string
	// Model is the model's name, such as gpt-4o-mini or llama3.2.
	Model string
	// HTTPClient makes the requests; nil: a client without an overall
	// timeout (each call is bounded by its context).
	HTTPClient *http.Client
}

// withDefaults fills in the provider's default base URL and model and
// returns the OpenAI-compatible base URL to call.
func (c ProviderConfig) withDefaults() ProviderConfig {
	if c.Provider == "" {
		c.Provider = ProviderBuiltin
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	switch c.Provider {
	case ProviderOpenAI:
		if c.BaseURL == "" {
			c.BaseURL = DefaultOpenAIBaseURL
		}
		if c.Model == "" {
			c.Model = DefaultOpenAIModel
		}
	case ProviderOllama:
		if c.BaseURL == "" {
			c.BaseURL = DefaultOllamaBaseURL
		}
		// Ollama's OpenAI-compatible API, which streams tool calls.
		if !strings.HasSuffix(c.BaseURL, "/v1") {
			c.BaseURL += "/v1"
		}
		if c.Model == "" {
			c.Model = DefaultOllamaModel
		}
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	return c
}

// NewModel returns the configured model.
//
// Both network providers go through langchaingo's OpenAI client. For
// ollama that is Ollama's OpenAI-compatible API under /v1: langchaingo's
// own llms/ollama (v0.1.14) ignores the tools option and refuses tool-call
// and tool-result messages, so it cannot run the agent.
func NewModel(cfg ProviderConfig) (Model, error) {
	cfg = cfg.withDefaults()
	switch cfg.Provider {
	case ProviderBuiltin:
		return Builtin{}, nil
	case ProviderOpenAI, ProviderOllama:
		key := cfg.APIKey
		if key == "" {
			// langchaingo requires a token (else it reads OPENAI_API_KEY);
			// servers without auth ignore it.
			key = "none"
		}
		m, err := openai.New(
			openai.WithBaseURL(cfg.BaseURL),
			openai.WithToken(key),
			openai.WithModel(cfg.Model),
			openai.WithHTTPClient(cfg.HTTPClient),
		)
		if err != nil {
			return nil, fmt.Errorf("%s model: %w", cfg.Provider, err)
		}
		return redactingModel{model: m, key: cfg.APIKey}, nil
	}
	return nil, fmt.Errorf("unknown model provider %q (want %s, %s or %s)", cfg.Provider, ProviderBuiltin, ProviderOpenAI, ProviderOllama)
}

// ErrKeyRejected is Ping's error for an endpoint that refuses the API key.
var ErrKeyRejected = errors.New("the endpoint refused the API key")

// Ping checks that the provider's endpoint answers and takes the key:
// GET {base}/models. Any answer but 401 and 403 will do (not every server
// lists models). The builtin provider always answers.
func Ping(ctx context.Context, cfg ProviderConfig) error {
	cfg = cfg.withDefaults()
	if cfg.Provider == ProviderBuiltin {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.BaseURL+"/models", nil)
	if err != nil {
		return err
	}
	if cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	}
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("reach %s: %w", cfg.BaseURL, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%w (%s answered %d)", ErrKeyRejected, cfg.BaseURL, resp.StatusCode)
	}
	return nil
}

// ProviderError is a network model's failure as Evo keeps it: the HTTP
// status the provider answered (0 if none) and its error text, redacted
// (see Redact). The provider's original error is not kept: its text may
// echo the API key. Clients are never shown Detail (ModelError.Public).
type ProviderError struct {
	Status int
	Detail string
}

func (e *ProviderError) Error() string { return e.Detail }

// redactingModel is a langchaingo model whose errors are ProviderErrors.
type redactingModel struct {
	model Model
	key   string
}

func (m redactingModel) GenerateContent(ctx context.Context, messages []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	resp, err := m.model.GenerateContent(ctx, messages, options...)
	if err != nil {
		msg := err.Error()
		pe := &ProviderError{Detail: Redact(msg, m.key)}
		// langchaingo: "API returned unexpected status code: 401: <the body's error.message>"
		if m := reStatus.FindStringSubmatch(msg); m != nil {
			pe.Status, _ = strconv.Atoi(m[1])
		}
		return resp, pe
	}
	return resp, nil
}

var reStatus = regexp.MustCompile(`status code: ([1-5][0-9][0-9])\b`)

// maxErrorDetail is the most characters of a provider's error text kept for
// the log.
const maxErrorDetail = 300

// reSecret matches what reads like a credential: a bearer token, an
// "api_key=..." pair, a key with a provider's prefix (sk-..., sk-proj-...,
// gsk_..., xai-...) and any run of 32 or more token characters.
var reSecret = regexp.MustCompile(`(?i)(bearer\s+|(?:api[_-]?key|token|secret|password|authorization)["']?\s*[:=]\s*["']?(?:bearer\s+)?)[^\s"',;]+` +
	`|\b(?:sk|pk|rk|gsk|xai|key)[-_][A-Za-z0-9_\-*.]{8,}|[A-Za-z0-9_\-+/=]{32,}`)

// Redact returns s fit for a log line: key (when set) and whatever reads
// like a credential replaced by [redacted], control characters and runs of
// white space made one space, and cut to 300 characters.
func Redact(s, key string) string {
	if key != "" {
		s = strings.ReplaceAll(s, key, "[redacted]")
	}
	s = reSecret.ReplaceAllStringFunc(s, func(m string) string {
		if sub := reSecret.FindStringSubmatch(m); sub[1] != "" {
			return sub[1] + "[redacted]"
		}
		return "[redacted]"
	})
	s = strings.Join(strings.FieldsFunc(strings.ToValidUTF8(s, "?"), func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
	if utf8.RuneCountInString(s) > maxErrorDetail {
		s = string([]rune(s)[:maxErrorDetail]) + "…"
	}
	return s
}
