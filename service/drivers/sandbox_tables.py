"""The sandbox's fixed vocabulary: names, places, employers, job titles and banks that
`sandbox_data` draws its fake people from. Data only; no logic."""

from __future__ import annotations

FIRST_NAMES = (
    "James", "Maria", "Robert", "Linda", "Michael", "Aisha", "David", "Mei", "Carlos", "Sarah",
    "Daniel", "Priya", "Kevin", "Emily", "Andre", "Grace", "Luis", "Hannah", "Omar", "Olivia",
    "Tyrone", "Sofia", "Ethan", "Fatima",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Nguyen", "Williams", "Brown", "Patel", "Martinez", "Kim",
    "Davis", "Lopez", "Wilson", "Anderson", "Thomas", "Okafor", "Moore", "Jackson", "Chen",
    "Rivera", "Clark", "Lewis", "Walker", "Hall", "Young",
)  # fmt: skip
STREETS = (
    "Maple", "Oak", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park", "Sunset",
    "Riverside", "Highland",
)  # fmt: skip
STREET_SUFFIXES = ("St", "Ave", "Blvd", "Dr", "Ln", "Rd", "Ct", "Way")
# (city, state, first three digits of the ZIP code, state income tax in basis points)
CITIES = (
    ("Austin", "TX", "787", 0),
    ("Columbus", "OH", "432", 300),
    ("Denver", "CO", "802", 440),
    ("Atlanta", "GA", "303", 539),
    ("Seattle", "WA", "981", 0),
    ("Charlotte", "NC", "282", 425),
    ("Phoenix", "AZ", "850", 250),
    ("Chicago", "IL", "606", 495),
    ("Sacramento", "CA", "958", 600),
    ("Albany", "NY", "122", 550),
    ("Orlando", "FL", "328", 0),
    ("Pittsburgh", "PA", "152", 307),
    ("Minneapolis", "MN", "554", 680),
    ("Portland", "OR", "972", 875),
)
EMPLOYERS = (
    "Northwind Logistics Inc.", "Bluebird Health Partners", "Summit Ridge Manufacturing",
    "Harbor & Pine Retail Co.", "Cedar Lane Foods", "Brightpath Software LLC",
    "Ironwood Construction", "Lakeside Medical Group", "Meridian Freight Services",
    "Golden Oak Hospitality",
)  # fmt: skip
HOURLY_TITLES = (
    "Warehouse Associate", "Cashier", "Line Cook", "Medical Assistant", "Delivery Driver",
    "Customer Service Representative", "Forklift Operator", "Pharmacy Technician",
)  # fmt: skip
SALARIED_TITLES = (
    "Software Engineer", "Staff Accountant", "Registered Nurse", "Operations Manager",
    "Marketing Specialist", "HR Generalist", "Financial Analyst", "Project Manager",
)  # fmt: skip
BANKS = ("First Harbor Bank", "Prairie Federal Credit Union", "Summit National Bank", "Evergreen Bank")
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")
ROUTING_PREFIXES = (*range(1, 13), *range(21, 33))  # Federal Reserve routing symbols
