package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// ErrUnknownFormat is returned by OpenFile for a file that is neither pcap
// nor pcapng.
var ErrUnknownFormat = errors.New("not a pcap or pcapng file")

// fileReadBuffer is the read buffer of a capture file.
const fileReadBuffer = 1 << 20

type packetReader interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

// File is a Source reading a capture file. It is not safe for concurrent use.
type File struct {
	f     *os.File
	r     packetReader
	stats Stats
	// Format is "pcap" or "pcapng".
	Format string
}

// OpenFile opens a pcap or pcapng capture file (also gzip-compressed pcap),
// recognised by its magic number whatever its name.
func OpenFile(path string) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open capture %s: %w", path, err)
	}
	br := bufio.NewReaderSize(f, fileReadBuffer)
	magic, err := br.Peek(4)
	if err != nil {
		f.Close()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("open capture %s: %w (file shorter than a header)", path, ErrUnknownFormat)
		}
		return nil, fmt.Errorf("read capture %s: %w", path, err)
	}
	src := &File{f: f, stats: Stats{Since: time.Now()}}
	switch m := binary.LittleEndian.Uint32(magic); {
	case m == 0x0a0d0d0a:
		src.Format = "pcapng"
		r, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("read pcapng header of %s: %w", path, err)
		}
		src.r = r
	case m == 0xa1b2c3d4 || m == 0xd4c3b2a1 || m == 0xa1b23c4d || m == 0x4d3cb2a1 || magic[0] == 0x1f && magic[1] == 0x8b:
		src.Format = "pcap"
		r, err := pcapgo.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("read pcap header of %s: %w", path, err)
		}
		src.r = r
	default:
		f.Close()
		return nil, fmt.Errorf("open capture %s: %w (magic %08x)", path, ErrUnknownFormat, m)
	}
	return src, nil
}

// ReadPacket returns the next frame; the data is valid until the next call.
// It returns io.EOF at the end of the file, and io.ErrUnexpectedEOF for a
// file cut in the middle of a record.
func (s *File) ReadPacket() ([]byte, gopacket.CaptureInfo, error) {
	data, ci, err := s.r.ZeroCopyReadPacketData()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ci, io.EOF
		}
		return nil, ci, fmt.Errorf("read capture record %d: %w", s.stats.Received+1, err)
	}
	s.stats.Received++
	return data, ci, nil
}

// LinkType is the link type of the file's frames.
func (s *File) LinkType() layers.LinkType { return s.r.LinkType() }

// Stats counts the frames read so far.
func (s *File) Stats() Stats { return s.stats }

// Close closes the file.
func (s *File) Close() error { return s.f.Close() }
