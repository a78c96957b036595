package hub

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// twinTx is the storage of device twins, an optional part of storeTx: a store without it answers
// ErrTwinsUnsupported. The document is opaque here (cloud/twin owns its shape); it belongs to one
// device generation, so a device deleted and created again starts with an empty twin.
type twinTx interface {
	twinDoc(deviceID, generationID string) (doc []byte, found bool, err error)
	putTwinDoc(deviceID, generationID string, doc []byte) error
}

// ErrTwinsUnsupported: the configured store keeps no device twins.
var ErrTwinsUnsupported = errors.New("this hub's store does not keep device twins")

// ReadTwin returns a device's stored twin document (nil when it has none yet) and the device as
// the registry shows it (status, connection state, last activity), read in one transaction.
func (h *Hub) ReadTwin(ctx context.Context, id string) (doc []byte, dev iothub.Device, err error) {
	var row deviceRow
	var count int
	err = h.view(ctx, func(tx storeTx) error {
		tt, ok := tx.(twinTx)
		if !ok {
			return ErrTwinsUnsupported
		}
		var found bool
		if row, found, err = tx.device(id); err != nil {
			return err
		} else if !found {
			return errDeviceNotFound(id)
		}
		if count, err = tx.pendingCount(id); err != nil {
			return err
		}
		doc, _, err = tt.twinDoc(id, row.GenerationID)
		return err
	})
	if err != nil {
		return nil, iothub.Device{}, err
	}
	return doc, h.toDevice(row, count), nil
}

// UpdateTwin replaces a device's twin document with what fn makes of the stored one (nil when
// none), durably, before it returns. fn may run more than once (a retried transaction) and must
// not have side effects; its error aborts the update and is returned as it is.
func (h *Hub) UpdateTwin(ctx context.Context, id string, fn func(doc []byte, dev iothub.Device) ([]byte, error)) (iothub.Device, error) {
	var dev iothub.Device
	err := h.updateFor(ctx, id, func(tx storeTx, _ *effects) error {
		tt, ok := tx.(twinTx)
		if !ok {
			return ErrTwinsUnsupported
		}
		row, found, err := tx.device(id)
		if err != nil {
			return err
		} else if !found {
			return errDeviceNotFound(id)
		}
		count, err := tx.pendingCount(id)
		if err != nil {
			return err
		}
		dev = h.toDevice(row, count)
		old, _, err := tt.twinDoc(id, row.GenerationID)
		if err != nil {
			return err
		}
		doc, err := fn(old, dev)
		if err != nil {
			return err
		}
		return tt.putTwinDoc(id, row.GenerationID, doc)
	})
	return dev, err
}

func (t *sqlTx) twinDoc(deviceID, generationID string) ([]byte, bool, error) {
	var gen, doc string
	err := t.queryRow(`SELECT generation_id, doc FROM twins WHERE device_id = ?`+t.forUpdate(), deviceID).Scan(&gen, &doc)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("read twin of %s: %w", deviceID, err)
	case gen != generationID:
		return nil, false, nil // left by a deleted device of the same id
	}
	return []byte(doc), true, nil
}

func (t *sqlTx) putTwinDoc(deviceID, generationID string, doc []byte) error {
	_, err := t.exec(`INSERT INTO twins (device_id, generation_id, doc) VALUES (?, ?, ?)
		ON CONFLICT (device_id) DO UPDATE SET generation_id = excluded.generation_id, doc = excluded.doc`,
		deviceID, generationID, string(doc))
	if err != nil {
		return fmt.Errorf("store twin of %s: %w", deviceID, err)
	}
	return nil
}
