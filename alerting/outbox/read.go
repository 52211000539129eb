package outbox

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/route"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Task is a due delivery with everything a sender needs. It is a copy: the
// state may move on while it is being sent.
type Task struct {
	Delivery  Delivery
	Attempt   int // the attempt this send is (Delivery.Attempts + 1)
	Ticket    string
	Recipient directory.Recipient
	Items     []TaskItem
	CreatedMs int64
}

// TaskItem is one finding of a task's notification.
type TaskItem struct {
	Kind    route.ItemKind
	Reason  route.Reason
	Finding *jasperv1.Finding
}

// Due returns at most limit deliveries whose next attempt is due at nowMs:
// only the head of each channel queue (so a channel receives its
// deliveries in order), skipping disabled channels and the deliveries for
// which skip returns true (already in flight).
func (m *Module) Due(nowMs int64, limit int, skip func(id string) bool) []Task {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Task
	for _, k := range sortedKeys(m.st.Queues) {
		if len(out) >= limit {
			break
		}
		q := m.st.Queues[k]
		if len(q) == 0 {
			continue
		}
		if _, off := m.st.Disabled[k]; off {
			continue
		}
		d := m.st.Deliveries[q[0]]
		if d == nil || d.State != StatePending || d.NextMs > nowMs || (skip != nil && skip(d.ID)) {
			continue
		}
		n := m.st.Notifications[d.Notification]
		r := m.st.Directory.Find(d.Recipient)
		if n == nil || r == nil {
			continue
		}
		t := Task{Delivery: *d, Attempt: d.Attempts + 1, Ticket: n.Ticket, CreatedMs: n.CreatedMs}
		t.Recipient = cloneRecipient(r)
		for _, it := range n.Items {
			var f jasperv1.Finding
			if err := proto.Unmarshal(it.FindingBytes, &f); err != nil {
				continue // only valid encodings enter the state
			}
			t.Items = append(t.Items, TaskItem{Kind: it.Kind, Reason: it.Reason, Finding: &f})
		}
		out = append(out, t)
	}
	return out
}

func cloneRecipient(r *directory.Recipient) directory.Recipient {
	d := directory.Directory{Recipients: []directory.Recipient{*r}}
	return d.Clone().Recipients[0]
}

// Audit returns the audit log of a recipient, oldest first.
func (m *Module) Audit(recipient string) []Attempt {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]Attempt(nil), m.st.Audit[recipient]...)
}

// Deliveries returns the unfinished deliveries of a recipient ("" for all),
// in queue order, and the failed ones.
func (m *Module) Deliveries(recipient string) []Delivery {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Delivery
	for _, k := range sortedKeys(m.st.Queues) {
		for _, id := range m.st.Queues[k] {
			if d := m.st.Deliveries[id]; d != nil && (recipient == "" || d.Recipient == recipient) {
				out = append(out, *d)
			}
		}
	}
	for _, id := range m.st.Failed {
		if d := m.st.Deliveries[id]; d != nil && (recipient == "" || d.Recipient == recipient) {
			out = append(out, *d)
		}
	}
	return out
}

// DisabledChannels returns the parked channels ("recipient channel") and why.
func (m *Module) DisabledChannels() map[string]string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]string, len(m.st.Disabled))
	for k, v := range m.st.Disabled {
		out[k] = v
	}
	return out
}

// Silences returns the silences, by id.
func (m *Module) Silences() []route.Silence {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []route.Silence
	for _, id := range sortedKeys(m.st.Silences) {
		out = append(out, *m.st.Silences[id])
	}
	return out
}

// Directory returns a copy of the current directory (with secrets: for
// code, not for display; use Redacted).
func (m *Module) Directory() directory.Directory {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st.Directory.Clone()
}

// Stats returns the replicated counters.
func (m *Module) Stats() Stats {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st.Stats
}

// NowMs is the module's event time (the last tick).
func (m *Module) NowMs() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st.NowMs
}

// FeedEntry is a feed item with its finding decoded.
type FeedEntry struct {
	DateAddedUs int64
	Finding     *jasperv1.Finding
}

// Feed returns up to limit items of a recipient's TAXII collection added
// after afterUs (exclusive; items whose objects straddle afterUs are
// included whole, callers filter objects), and whether more follow.
func (m *Module) Feed(recipient string, afterUs int64, limit int) ([]FeedEntry, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	feed := m.st.Feed[recipient]
	i := sort.Search(len(feed), func(i int) bool { return feed[i].DateAddedUs+FeedStride-1 > afterUs })
	var out []FeedEntry
	for ; i < len(feed) && len(out) < limit; i++ {
		var f jasperv1.Finding
		if err := proto.Unmarshal(feed[i].FindingBytes, &f); err != nil {
			continue
		}
		out = append(out, FeedEntry{DateAddedUs: feed[i].DateAddedUs, Finding: &f})
	}
	return out, i < len(feed)
}

// RecipientByToken returns the id of the recipient whose TAXII bearer token
// is token ("" when none).
func (m *Module) RecipientByToken(token string) string {
	if token == "" {
		return ""
	}
	h := sha256.Sum256([]byte(token))
	want := hex.EncodeToString(h[:])
	m.mu.RLock()
	defer m.mu.RUnlock()
	found := ""
	for i := range m.st.Directory.Recipients {
		r := &m.st.Directory.Recipients[i]
		if r.TAXIITokenSHA256 != "" && subtle.ConstantTimeCompare([]byte(r.TAXIITokenSHA256), []byte(want)) == 1 {
			found = r.ID
		}
	}
	return found
}

// CERTOf returns the id of the CERT recipient of a country ("" when none).
func (m *Module) CERTOf(country string) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for i := range m.st.Directory.Recipients {
		if r := &m.st.Directory.Recipients[i]; r.CERT && r.Country == country {
			return r.ID
		}
	}
	return ""
}

// Recipient returns a copy of one recipient.
func (m *Module) Recipient(id string) (directory.Recipient, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r := m.st.Directory.Find(id)
	if r == nil {
		return directory.Recipient{}, false
	}
	return cloneRecipient(r), true
}
