package store

import (
	"fmt"

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

// decodeCommand opens the envelope and checks that this hub understands it.
func decodeCommand(data []byte) (*jasperv1.Command, error) {
	var c jasperv1.Command
	if err := proto.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	if c.Version == 0 {
		return nil, fmt.Errorf("%w: envelope version 0", ErrBadCommand)
	}
	if c.Version > CommandVersion {
		return nil, fmt.Errorf("%w: envelope version %d, this hub applies up to %d: upgrade this hub", ErrUnknownCommand, c.Version, CommandVersion)
	}
	if _, ok := commandMinVersion[c.Type]; !ok {
		return nil, fmt.Errorf("%w: type %d (version %d) is unknown to this hub: upgrade this hub", ErrUnknownCommand, int32(c.Type), c.Version)
	}
	return &c, nil
}
