// Package capture reads frames from packet sources: capture files (pcap and
// pcapng, recognised by their magic number, not their name) and live
// AF_PACKET sockets. Every source hands out frames with their capture time
// and link type; the buffer returned by ReadPacket is valid only until the
// next call.
package capture

import (
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Source is a stream of frames.
type Source interface {
	// ReadPacket returns the next frame. The data slice may be reused by
	// the next call. io.EOF ends a finite source.
	ReadPacket() (data []byte, ci gopacket.CaptureInfo, err error)
	// LinkType is the link-layer type of every frame.
	LinkType() layers.LinkType
	// Stats reports what the source itself counted.
	Stats() Stats
	Close() error
}

// Stats are counters kept by a source.
type Stats struct {
	// Received frames handed to the reader.
	Received uint64
	// KernelDrops are frames the kernel dropped (live capture only).
	KernelDrops uint64
	// Since is when counting began.
	Since time.Time
}
