//go:build !linux

package capture

import (
	"errors"
	"time"

	"github.com/google/gopacket/layers"
)

// AFPacketOptions configure a live capture (Linux only).
type AFPacketOptions struct {
	Sockets     int
	FanoutID    uint16
	FrameSize   int
	BlockSize   int
	NumBlocks   int
	PollTimeout time.Duration
	LinkType    layers.LinkType
}

// AFPacket is a live capture; it exists only on Linux.
type AFPacket struct{ Source }

// OpenAFPacket fails: AF_PACKET exists only on Linux.
func OpenAFPacket(iface string, opts AFPacketOptions) (*AFPacket, error) {
	return nil, errors.New("live capture (AF_PACKET) needs Linux")
}
