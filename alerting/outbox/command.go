package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/route"
)

// Command operations.
const (
	OpFinding         = "finding"          // Finding: a detector's finding (proto bytes)
	OpTick            = "tick"             // TickMs: event time, when ticks come as commands
	OpLoadDirectory   = "load_directory"   // Directory: replace the whole directory
	OpPutRecipient    = "put_recipient"    // Recipient: insert or replace one
	OpDeleteRecipient = "delete_recipient" // ID
	OpPutSilence      = "put_silence"      // Silence
	OpDeleteSilence   = "delete_silence"   // ID
	OpAck             = "ack"              // Ack
	OpAttempt         = "attempt"          // Attempt: a delivery attempt's outcome
	OpEnableChannel   = "enable_channel"   // Channel: re-enable a disabled channel
)

// Command is the payload of every entry proposed for the module. Encode
// with Encode; the module decodes strictly.
type Command struct {
	Op        string               `json:"op"`
	Finding   []byte               `json:"finding,omitempty"`
	TickMs    int64                `json:"tick_ms,omitempty"`
	Directory *directory.Directory `json:"directory,omitempty"`
	Recipient *directory.Recipient `json:"recipient,omitempty"`
	ID        string               `json:"id,omitempty"`
	Silence   *route.Silence       `json:"silence,omitempty"`
	Ack       *AckCommand          `json:"ack,omitempty"`
	Attempt   *AttemptCommand      `json:"attempt,omitempty"`
	Channel   *ChannelRef          `json:"channel,omitempty"`
}

// AckCommand acknowledges a finding for a recipient (every recipient
// holding it when Recipient is empty): no more reminders.
type AckCommand struct {
	Recipient string `json:"recipient"`
	FindingID string `json:"finding_id"`
	By        string `json:"by,omitempty"`
}

// AttemptCommand records the outcome of one delivery attempt. The leader
// fills every field (times from its clock, the jittered retry time), so
// applying it is deterministic.
type AttemptCommand struct {
	Delivery  string `json:"delivery"`
	Attempt   int    `json:"attempt"` // 1 for the first attempt
	Outcome   string `json:"outcome"` // delivered, retry, disabled
	AtMs      int64  `json:"at_ms"`
	NextMs    int64  `json:"next_ms,omitempty"` // for retry
	Error     string `json:"error,omitempty"`
	Leader    string `json:"leader,omitempty"`
	LatencyMs int64  `json:"latency_ms,omitempty"`
}

// ChannelRef names one channel of one recipient.
type ChannelRef struct {
	Recipient string `json:"recipient"`
	Channel   string `json:"channel"`
}

// MaxCommandBytes bounds a command payload.
const MaxCommandBytes = 4 << 20

// Encode returns the payload for c.
func Encode(c Command) []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("outbox: encode command: %v", err)) // plain data: cannot fail
	}
	return b
}

// ErrBadCommand wraps every decoding or validation failure of a command.
var ErrBadCommand = errors.New("bad alerting command")

// Decode parses and checks a command payload (untrusted: it may come from
// an admin API or a corrupted log).
func Decode(b []byte) (Command, error) {
	var c Command
	if len(b) > MaxCommandBytes {
		return c, fmt.Errorf("%w: %d bytes", ErrBadCommand, len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Command{}, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if dec.More() {
		return Command{}, fmt.Errorf("%w: trailing data", ErrBadCommand)
	}
	if err := c.validate(); err != nil {
		return Command{}, fmt.Errorf("%w: %s: %w", ErrBadCommand, c.Op, err)
	}
	return c, nil
}

func (c *Command) validate() error {
	switch c.Op {
	case OpFinding:
		if len(c.Finding) == 0 {
			return errors.New("finding: required")
		}
	case OpTick:
		if c.TickMs <= 0 {
			return errors.New("tick_ms: required")
		}
	case OpLoadDirectory:
		if c.Directory == nil {
			return errors.New("directory: required")
		}
		return c.Directory.Validate()
	case OpPutRecipient:
		if c.Recipient == nil {
			return errors.New("recipient: required")
		}
		return c.Recipient.Validate("recipient")
	case OpDeleteRecipient, OpDeleteSilence:
		if c.ID == "" {
			return errors.New("id: required")
		}
	case OpPutSilence:
		if c.Silence == nil {
			return errors.New("silence: required")
		}
		return c.Silence.Validate()
	case OpAck:
		if c.Ack == nil || c.Ack.FindingID == "" {
			return errors.New("ack: finding_id required")
		}
	case OpAttempt:
		a := c.Attempt
		if a == nil || a.Delivery == "" || a.Attempt <= 0 {
			return errors.New("attempt: delivery and attempt required")
		}
		switch a.Outcome {
		case OutcomeOK, OutcomeGone:
		case OutcomeRetry:
			if a.NextMs < a.AtMs {
				return errors.New("attempt.next_ms: before at_ms")
			}
		default:
			return fmt.Errorf("attempt.outcome: %q", a.Outcome)
		}
		if len(a.Error) > 2048 {
			a.Error = a.Error[:2048]
		}
	case OpEnableChannel:
		if c.Channel == nil || c.Channel.Recipient == "" || c.Channel.Channel == "" {
			return errors.New("channel: recipient and channel required")
		}
	default:
		return fmt.Errorf("unknown op %q", c.Op)
	}
	return nil
}
