package admission

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore shares budgets among routers through one Redis: a reservation
// is one round trip, one EVALSHA of reserveScript that checks and takes
// every budget of every scope at once (atomically, as Lua scripts run);
// the settlement, after the response ends, is a second, one EVALSHA of
// settleScript. Each scope's keys share a hash tag, so a scope lives on one
// Redis Cluster slot. Time comes from the caller (the routers' clocks), in
// milliseconds.
type RedisStore struct {
	Client *redis.Client
	// Prefix starts every key; default "halyard:".
	Prefix string
	// MaxRequest bounds how long a concurrency slot is held when its
	// settlement never comes (a router died). Default 10m.
	MaxRequest time.Duration
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore connects to a redis:// URL with every timeout set to
// timeout and no retries, so that a dead Redis costs at most timeout.
func NewRedisStore(rawURL string, timeout time.Duration) (*RedisStore, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("admission store: %w", err)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = timeout, timeout, timeout, timeout
	opt.MaxRetries = -1
	opt.ContextTimeoutEnabled = true
	// Every new connection loads the scripts (SCRIPT LOAD), so that a
	// request's EVALSHA never meets NOSCRIPT (which would cost a second
	// round trip, an EVAL), even after Redis restarts empty.
	opt.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		for _, sc := range []*redis.Script{reserveScript, settleScript} {
			if err := sc.Load(ctx, cn).Err(); err != nil {
				return fmt.Errorf("admission store: load script: %w", err)
			}
		}
		return nil
	}
	return &RedisStore{Client: redis.NewClient(opt)}, nil
}

// Close closes the client.
func (s *RedisStore) Close() error { return s.Client.Close() }

// The three keys of a scope: request bucket, token bucket (hashes l, t),
// in-flight requests (sorted set of ids by expiry).
func (s *RedisStore) keys(sc Scope) (string, string, string) {
	p := s.Prefix
	if p == "" {
		p = "halyard:"
	}
	base := p + "{" + sc.Key + "}:"
	return base + "rpm", base + "tpm", base + "conc"
}

// reserveScript: KEYS are 3 per scope; ARGV = now_ms, id, tokens,
// conc_expiry_ms, then rpm, tpm, conc per scope. Returns {ok, scope,
// dim, retry_ms, then per scope: req_level, req_reset_ms, tok_level,
// tok_reset_ms}. dim 1 requests, 2 tokens, 3 concurrency.
var reserveScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local id = ARGV[2]
local cost = tonumber(ARGV[3])
local expiry = tonumber(ARGV[4])
local n = #KEYS / 3
local win = 60000
local function level(key, limit)
  local v = redis.call('HMGET', key, 'l', 't')
  if not v[1] then return limit end
  local l = tonumber(v[1]) + (now - tonumber(v[2])) * limit / win
  if l > limit then l = limit end
  return l
end
local deny, dim, retry = 0, 0, 0
local req, tok = {}, {}
for i = 0, n - 1 do
  local rpm = tonumber(ARGV[5 + i*3])
  local tpm = tonumber(ARGV[6 + i*3])
  local conc = tonumber(ARGV[7 + i*3])
  local k = i * 3
  if deny == 0 and conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k+3], '-inf', now)
    if redis.call('ZCARD', KEYS[k+3]) >= conc then deny, dim, retry = i + 1, 3, 1000 end
  end
  if rpm > 0 then
    req[i] = level(KEYS[k+1], rpm)
    if deny == 0 and req[i] < 1 then deny, dim, retry = i + 1, 1, math.ceil((1 - req[i]) * win / rpm) end
  end
  if tpm > 0 then
    tok[i] = level(KEYS[k+2], tpm)
    local need = cost
    if need > tpm then need = tpm end
    if deny == 0 and tok[i] < need then deny, dim, retry = i + 1, 2, math.ceil((need - tok[i]) * win / tpm) end
  end
end
local out = {deny == 0 and 1 or 0, deny, dim, retry}
for i = 0, n - 1 do
  local rpm = tonumber(ARGV[5 + i*3])
  local tpm = tonumber(ARGV[6 + i*3])
  local conc = tonumber(ARGV[7 + i*3])
  local k = i * 3
  if deny == 0 then
    if conc > 0 then
      redis.call('ZADD', KEYS[k+3], expiry, id)
      redis.call('PEXPIRE', KEYS[k+3], expiry - now)
    end
    if rpm > 0 then
      req[i] = req[i] - 1
      redis.call('HSET', KEYS[k+1], 'l', tostring(req[i]), 't', now)
      redis.call('PEXPIRE', KEYS[k+1], 2 * win)
    end
    if tpm > 0 then
      tok[i] = tok[i] - cost
      redis.call('HSET', KEYS[k+2], 'l', tostring(tok[i]), 't', now)
      redis.call('PEXPIRE', KEYS[k+2], 2 * win)
    end
  end
  local rl, rr, tl, tr = -1, 0, -1, 0
  if rpm > 0 then rl = math.floor(req[i]); rr = math.ceil((rpm - req[i]) * win / rpm) end
  if tpm > 0 then tl = math.floor(tok[i]); tr = math.ceil((tpm - tok[i]) * win / tpm) end
  table.insert(out, rl)
  table.insert(out, rr)
  table.insert(out, tl)
  table.insert(out, tr)
end
return out
`)

// settleScript: KEYS are 2 per scope (tpm, conc); ARGV = now_ms, id,
// refund, then tpm per scope. The refund (negative: a charge) goes back
// into each token bucket up to its limit.
var settleScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local id = ARGV[2]
local refund = tonumber(ARGV[3])
local n = #KEYS / 2
local win = 60000
for i = 0, n - 1 do
  local tpm = tonumber(ARGV[4 + i])
  redis.call('ZREM', KEYS[i*2+2], id)
  if tpm > 0 and refund ~= 0 then
    local v = redis.call('HMGET', KEYS[i*2+1], 'l', 't')
    if v[1] then
      local l = tonumber(v[1]) + (now - tonumber(v[2])) * tpm / win + refund
      if l > tpm then l = tpm end
      redis.call('HSET', KEYS[i*2+1], 'l', tostring(l), 't', now)
      redis.call('PEXPIRE', KEYS[i*2+1], 2 * win)
    end
  end
end
return 1
`)

// Reserve implements Store.
func (s *RedisStore) Reserve(ctx context.Context, now time.Time, r *Reservation) (Verdict, error) {
	nowMs := now.UnixMilli()
	maxReq := s.MaxRequest
	if maxReq <= 0 {
		maxReq = 10 * time.Minute
	}
	keys := make([]string, 0, 3*len(r.Scopes))
	args := make([]any, 0, 4+3*len(r.Scopes))
	args = append(args, nowMs, r.ID, r.Tokens, nowMs+maxReq.Milliseconds())
	for _, sc := range r.Scopes {
		a, b, c := s.keys(sc)
		keys = append(keys, a, b, c)
		args = append(args, sc.Limits.RequestsPerMinute, sc.Limits.TokensPerMinute, sc.Limits.Concurrency)
	}
	res, err := reserveScript.Run(ctx, s.Client, keys, args...).Int64Slice()
	if err != nil {
		return Verdict{}, fmt.Errorf("admission store: reserve: %w", err)
	}
	if len(res) != 4+4*len(r.Scopes) {
		return Verdict{}, fmt.Errorf("admission store: reserve: %d values in the answer", len(res))
	}
	v := Verdict{OK: res[0] == 1}
	if !v.OK {
		v.DeniedScope = int(res[1] - 1)
		v.Dim = [...]Dimension{"", DimRequests, DimTokens, DimConcurrency}[min(max(res[2], 0), 3)]
		v.RetryAfter = time.Duration(res[3]) * time.Millisecond
	}
	first := [2]bool{true, true}
	for i, sc := range r.Scopes {
		o := 4 + 4*i
		if sc.Limits.RequestsPerMinute > 0 {
			rem := max(res[o], 0)
			if first[0] || rem < v.Rate.RemainingRequests {
				v.Rate.LimitRequests, v.Rate.RemainingRequests, v.Rate.ResetRequests = sc.Limits.RequestsPerMinute, rem, time.Duration(res[o+1])*time.Millisecond
				first[0] = false
			}
		}
		if sc.Limits.TokensPerMinute > 0 {
			rem := max(res[o+2], 0)
			if first[1] || rem < v.Rate.RemainingTokens {
				v.Rate.LimitTokens, v.Rate.RemainingTokens, v.Rate.ResetTokens = sc.Limits.TokensPerMinute, rem, time.Duration(res[o+3])*time.Millisecond
				first[1] = false
			}
		}
	}
	return v, nil
}

// Settle implements Store.
func (s *RedisStore) Settle(ctx context.Context, now time.Time, r *Reservation, used int64) error {
	keys := make([]string, 0, 2*len(r.Scopes))
	args := make([]any, 0, 3+len(r.Scopes))
	args = append(args, now.UnixMilli(), r.ID, strconv.FormatInt(r.Tokens-used, 10))
	for _, sc := range r.Scopes {
		_, b, c := s.keys(sc)
		keys = append(keys, b, c)
		args = append(args, sc.Limits.TokensPerMinute)
	}
	if err := settleScript.Run(ctx, s.Client, keys, args...).Err(); err != nil {
		return fmt.Errorf("admission store: settle: %w", err)
	}
	return nil
}
