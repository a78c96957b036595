package iothub

// PolicyKeys is a shared access policy with its keys: the answer of c2d-hub's
// `POST /policies/{name}/renew-key` (a c2d extension; Azure renews keys through its management
// plane, whose `az iot hub policy renew-key` answers with these fields too).
type PolicyKeys struct {
	KeyName      string   `json:"keyName"`
	PrimaryKey   string   `json:"primaryKey"`
	SecondaryKey string   `json:"secondaryKey"`
	Rights       []string `json:"rights"`
}
