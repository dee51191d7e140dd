"""What the rows keep of people and places: the row policy, GeoIP, ip_places, privacy apply, forget
and export."""
