package store

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// CommandVersion is the newest command envelope version this hub applies.
// Bump it when adding a command type or changing a payload's meaning; see
// hub/DESIGN.md for the rolling-upgrade rule.
const CommandVersion = 1

// commandMinVersion is the envelope version that introduced each type.
var commandMinVersion = map[jasperv1.CommandType]uint32{
	jasperv1.CommandType_COMMAND_TYPE_BATCHES:       1,
	jasperv1.CommandType_COMMAND_TYPE_TICK:          1,
	jasperv1.CommandType_COMMAND_TYPE_MARK_LOADED:   1,
	jasperv1.CommandType_COMMAND_TYPE_REGISTER_NODE: 1,
	jasperv1.CommandType_COMMAND_TYPE_MODULE:        1,
}

var marshalOpts = proto.MarshalOptions{Deterministic: true}

// encodeCommand wraps a payload message in the versioned envelope.
func encodeCommand(t jasperv1.CommandType, payload proto.Message) ([]byte, error) {
	p, err := marshalOpts.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", t, err)
	}
	return marshalOpts.Marshal(&jasperv1.Command{Version: commandMinVersion[t], Type: t, Payload: p})
}

// command is a decoded envelope. payload aliases the entry's bytes: it is
// only read (decoded into messages that copy what they keep).
type command struct {
	Version uint32
	Type    jasperv1.CommandType
	Payload []byte
}

// parseEnvelope decodes the Command envelope as proto.Unmarshal does
// (last value of a field wins, unknown fields and fields of the wrong wire
// type skipped) without copying the payload: a batches entry is mostly
// payload, and each hub decodes every entry.
func parseEnvelope(data []byte) (command, error) {
	var c command
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return command{}, protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return command{}, fmt.Errorf("field number %d out of range", num)
		}
		data = data[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return command{}, protowire.ParseError(n)
			}
			c.Version, data = uint32(v), data[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return command{}, protowire.ParseError(n)
			}
			c.Type, data = jasperv1.CommandType(int32(v)), data[n:]
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return command{}, protowire.ParseError(n)
			}
			c.Payload, data = v, data[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return command{}, protowire.ParseError(n)
			}
			data = data[n:]
		}
	}
	return c, nil
}

// decodeCommand opens the envelope and checks that this hub understands it.
func decodeCommand(data []byte) (command, error) {
	c, err := parseEnvelope(data)
	if err != nil {
		return command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	if c.Version == 0 {
		return command{}, fmt.Errorf("%w: envelope version 0", ErrBadCommand)
	}
	if c.Version > CommandVersion {
		return command{}, fmt.Errorf("%w: envelope version %d, this hub applies up to %d: upgrade this hub", ErrUnknownCommand, c.Version, CommandVersion)
	}
	if _, ok := commandMinVersion[c.Type]; !ok {
		return command{}, fmt.Errorf("%w: type %d (version %d) is unknown to this hub: upgrade this hub", ErrUnknownCommand, int32(c.Type), c.Version)
	}
	return c, nil
}
