package route

import (
	"math"
	"sort"

	"github.com/jasperfed/jasper/alerting/directory"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// ItemKind says why a finding is in a notification.
type ItemKind string

// Item kinds.
const (
	ItemNew      ItemKind = "new"      // first notification of this finding to this recipient
	ItemReminder ItemKind = "reminder" // still continuing after repeat_interval, not acknowledged
	ItemResolved ItemKind = "resolved" // ended since it was notified
)

// Alert is one finding pending or notified for one recipient.
type Alert struct {
	Finding *jasperv1.Finding `json:"-"`
	// FindingBytes is Finding in deterministic protobuf encoding (what the
	// snapshot stores).
	FindingBytes []byte `json:"finding"`
	Reason       Reason `json:"reason"`
	Notified     bool   `json:"notified,omitempty"`
	NotifiedMs   int64  `json:"notified_ms,omitempty"`
	Ended        bool   `json:"ended,omitempty"`
	Acked        bool   `json:"acked,omitempty"`
	// PendingSinceMs is when the un-notified finding first became due for a
	// first notification (start of its group wait).
	PendingSinceMs int64 `json:"pending_since_ms,omitempty"`
	UpdatedMs      int64 `json:"updated_ms"`
}

// Group is the grouping state of one recipient.
type Group struct {
	Alerts       map[string]*Alert `json:"alerts"`
	LastDigestMs int64             `json:"last_digest_ms,omitempty"`
	// Token bucket of the rate limit; one notification costs tokenCost
	// (exact integer refill: rate_limit_per_hour units per millisecond).
	Tokens   int64 `json:"tokens"`
	BucketMs int64 `json:"bucket_ms"`
	// RateLimited counts flushes held back by the rate limit.
	RateLimited uint64 `json:"rate_limited,omitempty"`
	// NextMs is the earliest event time at which Flush can have something
	// to send (0: look now). It only ever errs early, never late, so a
	// tick costs nothing for the groups with nothing due.
	NextMs int64 `json:"next_ms,omitempty"`
	// ExpireMs is when Expire next looks at the group.
	ExpireMs int64 `json:"expire_ms,omitempty"`
}

// Wake makes the next Flush look at the group.
func (g *Group) Wake() { g.NextMs = 0 }

// NewGroup returns an empty group with a full rate bucket.
func NewGroup(rt directory.Routing, nowMs int64) *Group {
	return &Group{Alerts: map[string]*Alert{}, Tokens: int64(rt.RateLimitPerHour) * tokenCost, BucketMs: nowMs}
}

// Observe records a finding event for this recipient at event time nowMs.
func (g *Group) Observe(f *jasperv1.Finding, b []byte, reason Reason, nowMs int64) {
	a := g.Alerts[f.GetId()]
	if a == nil {
		if f.GetState() == jasperv1.FindingState_FINDING_STATE_ENDED {
			return // never notified and already over: nothing to say
		}
		a = &Alert{PendingSinceMs: nowMs}
		g.Alerts[f.GetId()] = a
	}
	a.Finding, a.FindingBytes, a.Reason, a.UpdatedMs = f, b, reason, nowMs
	if f.GetState() == jasperv1.FindingState_FINDING_STATE_ENDED {
		a.Ended = true
		g.NextMs = min(g.NextMs, nowMs)
	} else if a.Ended {
		// Came back after ending: a fresh episode.
		*a = Alert{Finding: f, FindingBytes: b, Reason: reason, UpdatedMs: nowMs, PendingSinceMs: nowMs}
	}
	if !a.Notified {
		g.NextMs = min(g.NextMs, nowMs)
	}
}

// Ack acknowledges a finding: no reminders until it ends.
func (g *Group) Ack(findingID string) bool {
	a := g.Alerts[findingID]
	if a == nil {
		return false
	}
	a.Acked = true
	return true
}

// Item is one finding in a notification.
type Item struct {
	Kind         ItemKind `json:"kind"`
	Reason       Reason   `json:"reason"`
	FindingBytes []byte   `json:"finding"`
}

// Flush decides, at event time nowMs, whether the group notifies now, and
// returns the items of the notification (nil: nothing to send). silenced
// reports whether a finding is muted. At most maxItems go into one
// notification; the rest stay due for the next flush.
//
// New findings go out once the oldest of them has waited group_wait. A
// digest of resolved findings and reminders (continuing, unacknowledged,
// last notified repeat_interval ago) goes out at most every group_interval;
// when a notification of new findings leaves anyway, due digest items ride
// along. Each notification spends one token of the hourly rate limit;
// without a token everything waits (and is counted), nothing is dropped.
func (g *Group) Flush(rt directory.Routing, nowMs int64, maxItems int, silenced func(*jasperv1.Finding) bool) []Item {
	if nowMs < g.NextMs {
		return nil
	}
	g.refill(rt, nowMs)
	ids := make([]string, 0, len(g.Alerts))
	for id := range g.Alerts {
		ids = append(ids, id)
	}
	sort.Strings(ids)

	wait, interval, repeat := rt.GroupWait.D().Milliseconds(), rt.GroupInterval.D().Milliseconds(), rt.RepeatInterval.D().Milliseconds()
	digestAt := g.LastDigestMs + interval
	next := int64(math.MaxInt64)
	var news, digest []string
	newDue := false
	for _, id := range ids {
		a := g.Alerts[id]
		if silenced(a.Finding) {
			next = min(next, nowMs+1) // a silence may end at any tick
			continue
		}
		switch {
		case !a.Notified && !a.Ended:
			news = append(news, id)
			due := a.PendingSinceMs + wait
			newDue = newDue || nowMs >= due
			next = min(next, due)
		case a.Notified && a.Ended:
			digest = append(digest, id)
			next = min(next, digestAt)
		case a.Notified && !a.Acked:
			due := a.NotifiedMs + repeat
			if nowMs >= due {
				digest = append(digest, id)
			}
			next = min(next, max(due, digestAt))
		}
	}
	digestDue := len(digest) > 0 && nowMs >= digestAt
	if !newDue && !digestDue {
		g.NextMs = next
		g.gc()
		return nil
	}
	if rt.RateLimitPerHour > 0 && g.Tokens < tokenCost {
		g.RateLimited++
		// The next whole token: (cost - tokens) / rate milliseconds away.
		g.NextMs = nowMs + (tokenCost-g.Tokens+int64(rt.RateLimitPerHour)-1)/int64(rt.RateLimitPerHour)
		return nil
	}
	g.NextMs = 0 // items changed: look again at the next tick
	if rt.RateLimitPerHour > 0 {
		g.Tokens -= tokenCost
	}
	var items []Item
	add := func(id string, k ItemKind) bool {
		if len(items) >= maxItems {
			return false
		}
		a := g.Alerts[id]
		items = append(items, Item{Kind: k, Reason: a.Reason, FindingBytes: a.FindingBytes})
		a.Notified, a.NotifiedMs = true, nowMs
		return true
	}
	for _, id := range news {
		if !add(id, ItemNew) {
			break
		}
	}
	{
		for _, id := range digest {
			a := g.Alerts[id]
			k := ItemReminder
			if a.Ended {
				k = ItemResolved
			}
			if !add(id, k) {
				break
			}
			if a.Ended {
				delete(g.Alerts, id)
			}
		}
		if digestDue {
			g.LastDigestMs = nowMs
		}
	}
	g.gc()
	return items
}

// gc forgets ended findings that were never notified (e.g. silenced).
func (g *Group) gc() {
	for id, a := range g.Alerts {
		if a.Ended && !a.Notified {
			delete(g.Alerts, id)
		}
	}
}

// Expire forgets findings not updated since beforeMs (the detector stopped
// talking about them); it returns how many. Findings observed before the
// first tick (time 0) are stamped with nowMs. It looks at the group at
// most once a minute of event time, or when force is set.
func (g *Group) Expire(nowMs, beforeMs int64, force bool) int {
	if !force && nowMs < g.ExpireMs {
		return 0
	}
	g.ExpireMs = nowMs + 60_000
	n := 0
	for id, a := range g.Alerts {
		if a.UpdatedMs == 0 {
			a.UpdatedMs = nowMs
			if !a.Notified {
				a.PendingSinceMs = nowMs
			}
		}
		if a.UpdatedMs < beforeMs {
			delete(g.Alerts, id)
			n++
		}
	}
	return n
}

const tokenCost = 3_600_000 // one notification, in rate-units x milliseconds

func (g *Group) refill(rt directory.Routing, nowMs int64) {
	if rt.RateLimitPerHour <= 0 {
		return
	}
	if nowMs > g.BucketMs {
		g.Tokens += (nowMs - g.BucketMs) * int64(rt.RateLimitPerHour)
		g.BucketMs = nowMs
	}
	if c := int64(rt.RateLimitPerHour) * tokenCost; g.Tokens > c {
		g.Tokens = c
	}
}
