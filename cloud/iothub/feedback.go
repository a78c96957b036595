package iothub

import "fmt"

// FeedbackDescription is the description text of a feedback record for status. Azure's own texts are
// not published beyond "Success"; c2d uses these short sentences and never parses them back (read
// statusCode).
func FeedbackDescription(status FeedbackStatus) string {
	switch status {
	case StatusSuccess:
		return "Success"
	case StatusExpired:
		return "Message expired"
	case StatusDeliveryCountExceeded:
		return "Delivery count exceeded"
	case StatusRejected:
		return "Message rejected"
	case StatusPurged:
		return "Message purged"
	}
	return string(status)
}

// ParseFeedbackStatus accepts Azure's five status codes exactly.
func ParseFeedbackStatus(s string) (FeedbackStatus, error) {
	switch st := FeedbackStatus(s); st {
	case StatusSuccess, StatusExpired, StatusDeliveryCountExceeded, StatusRejected, StatusPurged:
		return st, nil
	}
	return "", fmt.Errorf("%w: feedback status %s: want Success, Expired, DeliveryCountExceeded, Rejected or Purged", ErrInvalid, quote(s))
}

// Terminal reports the message state a feedback status ends in.
func (s FeedbackStatus) Terminal() MessageState {
	switch s {
	case StatusSuccess:
		return StateCompleted
	case StatusPurged:
		return StatePurged
	}
	return StateDeadLettered
}
