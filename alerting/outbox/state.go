package outbox

import (
	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/route"
)

// Delivery states.
const (
	StatePending  = "pending" // waiting for its next attempt
	StateFailed   = "failed"  // retried for RetryFor without success; kept for the operator
	StateRemoved  = "removed" // its recipient or channel left the directory
	OutcomeOK     = "delivered"
	OutcomeRetry  = "retry"
	OutcomeGone   = "disabled" // the endpoint said it is gone (HTTP 410): channel disabled
	OutcomeFailed = "failed"
)

// Notification is what one flush of a recipient's group produced: the
// findings, once, for all the recipient's channels.
type Notification struct {
	ID        string       `json:"id"`
	Ticket    string       `json:"ticket"`
	Recipient string       `json:"recipient"`
	CreatedMs int64        `json:"created_ms"`
	Items     []route.Item `json:"items"`
	// Pending counts this notification's deliveries not yet finished.
	Pending int `json:"pending"`
}

// Delivery is one notification to one channel of its recipient. Its ID is
// stable across retries and leaders: the idempotency key receivers see.
type Delivery struct {
	ID           string `json:"id"`
	Notification string `json:"notification"`
	Recipient    string `json:"recipient"`
	Channel      string `json:"channel"`
	CreatedMs    int64  `json:"created_ms"`
	Attempts     int    `json:"attempts"`
	NextMs       int64  `json:"next_ms"`
	State        string `json:"state"`
	LastError    string `json:"last_error,omitempty"`
}

// Attempt is one audit-log row: a delivery attempt and its outcome.
type Attempt struct {
	Index     uint64 `json:"index"`
	Delivery  string `json:"delivery"`
	Ticket    string `json:"ticket,omitempty"`
	Channel   string `json:"channel"`
	Attempt   int    `json:"attempt"`
	AtMs      int64  `json:"at_ms"`
	Outcome   string `json:"outcome"`
	Error     string `json:"error,omitempty"`
	NextMs    int64  `json:"next_ms,omitempty"`
	Leader    string `json:"leader,omitempty"`
	LatencyMs int64  `json:"latency_ms,omitempty"`
}

// FeedItem is one finding in a recipient's TAXII collection. DateAddedUs
// (Unix microseconds) is strictly increasing in steps of FeedStride so each
// STIX object of the item gets its own date_added.
type FeedItem struct {
	DateAddedUs  int64  `json:"date_added_us"`
	Notification string `json:"notification"`
	FindingBytes []byte `json:"finding"`
}

// FeedStride is the room, in microseconds, between feed items: the STIX
// objects of one finding take date_added DateAddedUs+0, +1, ...
const FeedStride = 64

// Stats are counters kept in the replicated state.
type Stats struct {
	Findings       uint64 `json:"findings"`
	Notifications  uint64 `json:"notifications"`
	Deliveries     uint64 `json:"deliveries"`
	Delivered      uint64 `json:"delivered"`
	Retries        uint64 `json:"retries"`
	Disabled       uint64 `json:"disabled"`
	Failed         uint64 `json:"failed"`
	Removed        uint64 `json:"removed"`
	Shed           uint64 `json:"shed"`            // findings not held: a recipient's group was full
	Backpressured  uint64 `json:"backpressured"`   // flushes held: too many pending deliveries
	Expired        uint64 `json:"expired"`         // findings forgotten after no update for ExpireAfter
	StaleAttempts  uint64 `json:"stale_attempts"`  // attempt results for a delivery already moved on
	FailedEvicted  uint64 `json:"failed_evicted"`  // failed deliveries dropped beyond MaxFailed
	FeedEvicted    uint64 `json:"feed_evicted"`    // TAXII items dropped beyond MaxFeedPerRecipient
	AuditEvicted   uint64 `json:"audit_evicted"`   // audit rows dropped beyond MaxAuditPerRecipient
	DirectoryLoads uint64 `json:"directory_loads"` // directory changes applied
}

// state is everything the module replicates. Encoding/json writes map keys
// sorted, so equal states give byte-equal snapshots.
type state struct {
	Version       int                       `json:"version"`
	Index         uint64                    `json:"index"`
	NowMs         int64                     `json:"now_ms"`
	Seq           uint64                    `json:"seq"`
	Directory     directory.Directory       `json:"directory"`
	DirVersion    uint64                    `json:"dir_version"`
	Groups        map[string]*route.Group   `json:"groups"`
	Silences      map[string]*route.Silence `json:"silences"`
	Notifications map[string]*Notification  `json:"notifications"`
	Deliveries    map[string]*Delivery      `json:"deliveries"`
	// Queues: per "recipient channel" key, delivery ids in creation order.
	Queues map[string][]string `json:"queues"`
	// Disabled channels ("recipient channel" key) and why.
	Disabled map[string]string     `json:"disabled"`
	Failed   []string              `json:"failed"`
	Audit    map[string][]Attempt  `json:"audit"`
	Feed     map[string][]FeedItem `json:"feed"`
	Stats    Stats                 `json:"stats"`
}

func newState() state {
	return state{
		Version:       1,
		Groups:        map[string]*route.Group{},
		Silences:      map[string]*route.Silence{},
		Notifications: map[string]*Notification{},
		Deliveries:    map[string]*Delivery{},
		Queues:        map[string][]string{},
		Disabled:      map[string]string{},
		Audit:         map[string][]Attempt{},
		Feed:          map[string][]FeedItem{},
	}
}

func queueKey(recipient, channel string) string { return recipient + " " + channel }
