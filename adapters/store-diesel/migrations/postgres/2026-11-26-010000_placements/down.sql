DROP TABLE placements;
