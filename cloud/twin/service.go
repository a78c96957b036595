package twin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Store keeps twin documents durably; *hub.Hub implements it.
type Store interface {
	ReadTwin(ctx context.Context, id string) ([]byte, iothub.Device, error)
	UpdateTwin(ctx context.Context, id string, fn func(doc []byte, dev iothub.Device) ([]byte, error)) (iothub.Device, error)
}

var _ Store = (*hub.Hub)(nil)

// Notifier tells a connected device of a desired-properties change (the broker implements it):
// sent is false when the device has no session subscribed to desired changes.
type Notifier interface {
	PublishDesired(deviceID, topic string, body []byte) (sent bool, err error)
}

// Relay passes a desired change to the other nodes of a cluster, for a device with no session on
// this node; *hub.Hub implements it (PublishDesiredChange).
type Relay interface {
	PublishDesiredChange(deviceID string, version int64, patch []byte)
}

var _ Relay = (*hub.Hub)(nil)

// Service serves twins to the service API and to devices over MQTT. Safe for concurrent use.
type Service struct {
	st    Store
	log   *slog.Logger
	now   func() time.Time
	n     Notifier
	relay Relay
}

// NewService returns a Service over st; SetNotifier connects it to the broker.
func NewService(st Store, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, log: log, now: time.Now}
}

// SetNotifier sets where desired changes go (the broker, created after the Service).
func (s *Service) SetNotifier(n Notifier) { s.n = n }

// SetRelay makes desired changes for devices not connected here reach the node holding them (a
// cluster; set before serving).
func (s *Service) SetRelay(r Relay) { s.relay = r }

// DesiredChanged sends a desired change another node made (Relay) to the device if it is
// connected here and subscribed; a nil patch (too large to relay) sends the whole desired section.
func (s *Service) DesiredChanged(ctx context.Context, id string, version int64, patch []byte) {
	if s.n == nil {
		return
	}
	if patch == nil {
		raw, dev, err := s.st.ReadTwin(ctx, id)
		if err != nil {
			s.log.Debug("relayed desired change: read the twin", "device", id, "err", err)
			return
		}
		d, err := load(raw)
		if err != nil {
			s.log.Warn("relayed desired change: twin unreadable", "device", id, "err", err)
			return
		}
		d = s.orNew(d, dev)
		version, patch = d.Desired.Version, mustJSON(d.Desired.Plain())
	}
	if sent, err := s.n.PublishDesired(id, DesiredTopic(version), patch); err != nil {
		s.log.Warn("relayed desired change not sent to the device; it reads its twin when it reconnects", "device", id, "err", err)
	} else if sent {
		s.log.Debug("relayed desired change sent", "device", id, "version", version)
	}
}

// Twin is Azure's twin JSON (api-version 2021-04-12) as GET /twins/{id} returns it.
type Twin struct {
	DeviceID                  string       `json:"deviceId"`
	ETag                      string       `json:"etag"`
	DeviceETag                string       `json:"deviceEtag"`
	Version                   int64        `json:"version"`
	Status                    string       `json:"status"`
	StatusReason              string       `json:"statusReason,omitempty"`
	ConnectionState           string       `json:"connectionState"`
	LastActivityTime          string       `json:"lastActivityTime"`
	CloudToDeviceMessageCount int          `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string       `json:"authenticationType"`
	X509Thumbprint            thumbprint   `json:"x509Thumbprint"`
	Capabilities              capabilities `json:"capabilities"`
	Tags                      Object       `json:"tags"`
	Properties                struct {
		Desired  Object `json:"desired"`
		Reported Object `json:"reported"`
	} `json:"properties"`
}

type thumbprint struct {
	Primary   *string `json:"primaryThumbprint"`
	Secondary *string `json:"secondaryThumbprint"`
}

type capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

func load(doc []byte) (*Doc, error) {
	if doc == nil {
		return nil, nil
	}
	d := &Doc{}
	dec := json.NewDecoder(bytesReader(doc))
	dec.UseNumber()
	if err := dec.Decode(d); err != nil {
		return nil, fmt.Errorf("stored twin: %w", err)
	}
	if d.Tags == nil {
		d.Tags = Object{}
	}
	for _, sec := range []*Section{&d.Desired, &d.Reported} {
		if sec.Props == nil {
			sec.Props = Object{}
		}
	}
	return d, nil
}

func (s *Service) orNew(d *Doc, dev iothub.Device) *Doc {
	if d != nil {
		return d
	}
	t := dev.ConnectionStateUpdatedTime
	if t.IsZero() {
		t = s.now()
	}
	return New(t)
}

func render(d *Doc, dev iothub.Device) Twin {
	t := Twin{
		DeviceID: dev.DeviceID, ETag: d.ETag(), DeviceETag: dev.ETag, Version: d.Version,
		Status: string(dev.Status), StatusReason: dev.StatusReason, ConnectionState: dev.ConnectionState,
		LastActivityTime: "0001-01-01T00:00:00Z", CloudToDeviceMessageCount: dev.CloudToDeviceMessageCount,
		AuthenticationType: "sas", Tags: deepCopy(d.Tags),
	}
	if t.Status == "" {
		t.Status = string(iothub.DeviceEnabled)
	}
	if t.ConnectionState == "" {
		t.ConnectionState = "Disconnected"
	}
	if !dev.LastActivityTime.IsZero() {
		t.LastActivityTime = dev.LastActivityTime.UTC().Format(timeFormat)
	}
	t.Properties.Desired = d.Desired.Render(true)
	t.Properties.Reported = d.Reported.Render(false)
	return t
}

// Get is GET /twins/{id}.
func (s *Service) Get(ctx context.Context, id string) (Twin, error) {
	raw, dev, err := s.st.ReadTwin(ctx, id)
	if err != nil {
		return Twin{}, err
	}
	d, err := load(raw)
	if err != nil {
		return Twin{}, err
	}
	return render(s.orNew(d, dev), dev), nil
}

// servicePatch is the body of PATCH/PUT /twins/{id}: the writable parts. Read-only fields an SDK
// sends back (deviceId, etag, version, status, ...) are ignored, as Azure does.
type servicePatch struct {
	Tags       Object
	Desired    Object
	hasTags    bool
	hasDesired bool
}

func parseServicePatch(body []byte) (servicePatch, error) {
	var p servicePatch
	o, err := Parse(body)
	if err != nil {
		return p, err
	}
	if t, ok := o["tags"]; ok && t != nil {
		to, ok := t.(Object)
		if !ok {
			return p, &Error{Path: "tags", Why: "want an object"}
		}
		if err := Validate(to, "tags", false); err != nil {
			return p, err
		}
		p.Tags, p.hasTags = to, true
	}
	props, ok := o["properties"]
	if !ok || props == nil {
		return p, nil
	}
	po, ok := props.(Object)
	if !ok {
		return p, &Error{Path: "properties", Why: "want an object"}
	}
	if _, ok := po["reported"]; ok {
		return p, &Error{Path: "properties.reported", Why: "reported properties are written by the device, not the service"}
	}
	if dsr, ok := po["desired"]; ok && dsr != nil {
		do, ok := dsr.(Object)
		if !ok {
			return p, &Error{Path: "properties.desired", Why: "want an object"}
		}
		if err := Validate(do, "properties.desired", true); err != nil {
			return p, err
		}
		p.Desired, p.hasDesired = do, true
	}
	return p, nil
}

// Update is PATCH (replace false: merge, null deletes) or PUT (replace: tags and desired become
// exactly what is sent) of /twins/{id}. ifMatch is the etag without quotes; "" or "*" is
// unconditional. A desired change is sent to the device if it is connected and subscribed.
func (s *Service) Update(ctx context.Context, id string, body []byte, ifMatch string, replace bool) (Twin, error) {
	p, err := parseServicePatch(body)
	if err != nil {
		return Twin{}, invalid(err)
	}
	var out Twin
	var notify []byte
	var notifyVersion int64
	_, err = s.st.UpdateTwin(ctx, id, func(raw []byte, dev iothub.Device) ([]byte, error) {
		notify = nil
		d, err := load(raw)
		if err != nil {
			return nil, err
		}
		d = s.orNew(d, dev)
		if ifMatch != "" && ifMatch != "*" && ifMatch != d.ETag() {
			return nil, &iothub.Error{Code: iothub.CodePreconditionFailed,
				Detail: fmt.Sprintf("twin of %q has etag %q, not %q: read it again", id, d.ETag(), ifMatch)}
		}
		now := s.now()
		switch {
		case replace:
			if err := d.ReplaceTags(p.Tags); err != nil {
				return nil, invalid(err)
			}
			if err := d.Desired.Replace(p.Desired, now, "properties.desired", MaxSectionBytes); err != nil {
				return nil, invalid(err)
			}
			notify = mustJSON(d.Desired.Plain())
		default:
			if p.hasTags {
				if err := d.MergeTags(p.Tags); err != nil {
					return nil, invalid(err)
				}
			}
			if p.hasDesired {
				if err := d.Desired.Merge(p.Desired, now, "properties.desired", MaxSectionBytes); err != nil {
					return nil, invalid(err)
				}
				patch := deepCopy(p.Desired)
				patch[versionKey] = d.Desired.Version
				notify = mustJSON(patch)
			}
		}
		notifyVersion = d.Desired.Version
		d.Version++
		out = render(d, dev)
		return json.Marshal(d)
	})
	if err != nil {
		return Twin{}, err
	}
	if notify != nil && s.n != nil {
		topic := DesiredTopic(notifyVersion)
		if sent, err := s.n.PublishDesired(id, topic, notify); err != nil {
			s.log.Warn("desired change not sent to the device; it reads its twin when it reconnects", "device", id, "err", err)
		} else if sent {
			s.log.Debug("desired change sent", "device", id, "version", notifyVersion)
		} else if s.relay != nil {
			s.relay.PublishDesiredChange(id, notifyVersion, notify)
		}
	} else if notify != nil && s.relay != nil {
		s.relay.PublishDesiredChange(id, notifyVersion, notify)
	}
	return out, nil
}

// DeviceGet is the body of a device's MQTT twin GET: {"desired":{…,"$version":n},"reported":{…}}.
func (s *Service) DeviceGet(ctx context.Context, id string) ([]byte, error) {
	raw, dev, err := s.st.ReadTwin(ctx, id)
	if err != nil {
		return nil, err
	}
	d, err := load(raw)
	if err != nil {
		return nil, err
	}
	d = s.orNew(d, dev)
	return mustJSON(Object{"desired": d.Desired.Plain(), "reported": d.Reported.Plain()}), nil
}

// DeviceReport merges a device's reported-properties patch and returns the new reported $version.
func (s *Service) DeviceReport(ctx context.Context, id string, body []byte) (int64, error) {
	o, err := Parse(body)
	if err != nil {
		return 0, invalid(err)
	}
	if err := Validate(o, "properties.reported", true); err != nil {
		return 0, invalid(err)
	}
	var ver int64
	_, err = s.st.UpdateTwin(ctx, id, func(raw []byte, dev iothub.Device) ([]byte, error) {
		d, err := load(raw)
		if err != nil {
			return nil, err
		}
		d = s.orNew(d, dev)
		if err := d.Reported.Merge(o, s.now(), "properties.reported", MaxSectionBytes); err != nil {
			return nil, invalid(err)
		}
		d.Version++
		ver = d.Reported.Version
		return json.Marshal(d)
	})
	return ver, err
}

// invalid turns a validation failure into Azure's 400004.
func invalid(err error) error {
	var te *Error
	if errors.As(err, &te) {
		return &iothub.Error{Code: iothub.CodeArgumentInvalid, Detail: te.Error()}
	}
	return err
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
