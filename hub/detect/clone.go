package detect

import (
	"maps"
	"slices"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// cloneFinding is proto.Clone for a Finding without reflection: every
// field copied, slices and the map into memory of their own (strings are
// immutable and shared). TestCloneFindingCopiesEveryField sets every field
// the message has, so a field added to the message and not here fails it.
func cloneFinding(f *jasperv1.Finding) *jasperv1.Finding {
	c := &jasperv1.Finding{
		Id:           f.Id,
		Type:         f.Type,
		State:        f.State,
		SrcIp:        cloneNonNil(f.SrcIp),
		SrcCountry:   f.SrcCountry,
		SrcAsn:       f.SrcAsn,
		Protocol:     f.Protocol,
		Port:         f.Port,
		Fingerprint:  f.Fingerprint,
		Country:      f.Country,
		FirstSeenMs:  f.FirstSeenMs,
		LastSeenMs:   f.LastSeenMs,
		Ports:        cloneNonNil(f.Ports),
		Classes:      cloneNonNil(f.Classes),
		Packets:      f.Packets,
		Bytes:        f.Bytes,
		DstIps:       f.DstIps,
		Sensors:      cloneNonNil(f.Sensors),
		Baseline:     f.Baseline,
		Observed:     f.Observed,
		Score:        f.Score,
		TopCountries: cloneNonNil(f.TopCountries),
		DetectedAtMs: f.DetectedAtMs,
		UpdatedAtMs:  f.UpdatedAtMs,
		UpdatedIndex: f.UpdatedIndex,
		GeoDbVersion: f.GeoDbVersion,
		Summary:      f.Summary,
	}
	if len(f.Fingerprints) > 0 {
		c.Fingerprints = maps.Clone(f.Fingerprints)
	}
	if u := f.ProtoReflect().GetUnknown(); len(u) > 0 {
		c.ProtoReflect().SetUnknown(slices.Clone(u))
	}
	return c
}

// cloneNonNil copies s; empty stays nil, as proto.Clone leaves it.
func cloneNonNil[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}
